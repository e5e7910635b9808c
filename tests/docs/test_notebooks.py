"""The notebooks run top to bottom against the session's real vLLM servers, as a reader runs them.

Each notebook is executed with nbclient in a kernel of the running interpreter, with the server
URLs in the kernel's environment (so the notebooks start no server of their own). The committed
files carry no outputs: executed outputs hold ports and timings, and would go stale.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from support.servers import SENTINEL_API_KEY

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = [
    "01_quickstart_client.ipynb",
    "02_llamaindex.ipynb",
    "03_langchain.ipynb",
    "04_does_reranking_help.ipynb",
]
CELL_TIMEOUT = 600  # seconds per cell: notebook 4 reranks 35 queries' candidates on 2 CPU cores
# Nothing a reader should not see: secrets and paths of the machine that ran the notebook.
FORBIDDEN = (SENTINEL_API_KEY, "Bearer ", "/root/", "/work/", "/home/", "site-packages")


def _read(name: str) -> Any:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _text_outputs(cell: Any) -> str:
    """Every text a code cell showed: streams, results, displays, errors (not images)."""
    parts: list[str] = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts += [v for k, v in output.data.items() if not k.startswith("image/")]
        elif output.output_type == "error":
            parts += [output.ename, output.evalue, *output.traceback]
    return "\n".join(parts)


def _images(nb: Any) -> int:
    return sum(
        1
        for cell in _code_cells(nb)
        for output in cell.outputs
        if output.output_type == "display_data" and "image/png" in output.data
    )


def _all_text(nb: Any) -> str:
    return "\n".join(_text_outputs(cell) for cell in _code_cells(nb))


def _execute(name: str, urls: dict[str, str]) -> Any:
    """Run ``name`` in a fresh kernel whose environment names the servers; return it executed."""
    nb = _read(name)
    # Only the URLs we give: a developer's RERANK_* settings must not change what runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    env.update(urls)
    # A key the servers ignore (they run without --api-key): it must never reach an output.
    env["RERANK_API_KEY"] = SENTINEL_API_KEY
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",  # jupyter_client runs the native kernel with sys.executable
        allow_errors=False,  # a cell error fails the test (CellExecutionError)
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # its own folder, as in Jupyter
    )
    client.execute(env=env)
    return nb


@pytest.fixture(scope="module")
def server_urls(minilm_server: Any, tiny_server: Any) -> dict[str, str]:
    return {
        # MiniLM: real relevance scores for every story but Qwen3-Reranker's instructions.
        "RERANK_BASE_URL": minilm_server.base_url,
        # The tiny random-weight Qwen3 reranker: the instruction mechanics, meaningless scores.
        "RERANK_QWEN3_BASE_URL": tiny_server.base_url,
    }


def _check_clean_outputs(nb: Any) -> None:
    text = _all_text(nb)
    for forbidden in FORBIDDEN:
        at = text.find(forbidden)
        assert at < 0, f"executed outputs show {forbidden!r}: ...{text[at - 150 : at + 150]}..."


def _execute_clean(name: str, urls: dict[str, str]) -> tuple[Any, str]:
    """Run ``name`` (see _execute), check no output shows a secret or warning; return the
    executed notebook and the text of all its outputs."""
    nb = _execute(name, urls)
    _check_clean_outputs(nb)
    return nb, _all_text(nb)


# -- the committed files ----------------------------------------------------------------------


def test_the_four_notebooks_are_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_is_valid_and_has_no_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for cell in _code_cells(nb):
        assert cell.outputs == [], f"{name}: committed with outputs"
        assert cell.execution_count is None, f"{name}: committed with execution counts"
    # Each opens with what it shows and what it needs.
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert "RERANK_BASE_URL" in first.source and "rerank-serve" in first.source


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_uses_top_level_await_never_asyncio_run(name):
    source = "\n".join(cell.source for cell in _code_cells(_read(name)))
    assert "asyncio.run(" not in source
    assert re.search(r"^\s*\w[\w ,]*= await |^await ", source, flags=re.M), "no async shown"


# -- executed against the real servers ----------------------------------------------------------


def test_quickstart_runs(server_urls):
    nb, text = _execute_clean(EXPECTED[0], server_urls)
    # The relevance story on MiniLM's real scores: the JSON document ranks first.
    first = re.search(r"^1\. .*$", text, flags=re.M)
    assert first is not None and "json.load(f)" in first.group(), first
    # Started no server: the URL was given.
    assert "server given by RERANK_BASE_URL" in text
    # The instruction section ran on the Qwen3 server, showing the prompt it changes.
    assert "<Instruct>: Given a web search query" in text
    assert "<Instruct>: Given a question about Python programming, retrieve" in text
    assert "per-call instruction:" in text
    # Batching reported every batch, and each typed error was raised and caught.
    assert re.search(r"13/13", text)
    for error in (
        "RerankInputError",
        "RerankStatusError",
        "RerankConnectionError",
        "RerankConfigError",
    ):
        assert f"caught {error}" in text
    assert "404" in text
    assert _images(nb) >= 2


def test_llamaindex_runs(server_urls):
    nb, text = _execute_clean(EXPECTED[1], server_urls)
    for shown in (
        # MiniLM puts the json.load node first; the index's own node keeps its metadata.
        "reranked first: json-load",
        "index's node untouched: {'source': 'python-docs'}",
        "'retrieval_score'",
        "'rerank_rank': 1",
        # One start/end pair per query, on the sync and the async engine.
        "sync: ReRankStartEvent: 1, ReRankEndEvent: 1",
        "async: ReRankStartEvent: 1, ReRankEndEvent: 1",
        "best for 'cooking pasta': pasta",
    ):
        assert shown in text
    assert _images(nb) >= 1


def test_langchain_runs(server_urls):
    nb, text = _execute_clean(EXPECTED[2], server_urls)
    # BM25 (the package's own, behind langchain-core's BaseRetriever) ranks pickle first; the
    # reranker puts json.load first.
    assert re.search(r"^1\. pickle ", text, flags=re.M)
    assert "reranked first: json-load" in text
    for key in ("relevance_score", "rerank_rank", "original_index", "reranked"):
        assert f"'{key}'" in text
    assert "input untouched: {'source': 'python-docs'}" in text
    assert "events: ['rerank_start', 'rerank_end']" in text
    assert "async events: ['rerank_start', 'rerank_end']" in text
    assert _images(nb) >= 1


def test_does_reranking_help_runs(server_urls):
    nb, text = _execute_clean(EXPECTED[3], server_urls)
    # rerank_plugins.evaluate's report: each system with 95% intervals (numbers in range, not
    # asserted to improve: the notebook reports the figures whichever way they come out).
    number = r"([01]\.\d{3}) \[([01]\.\d{3}), ([01]\.\d{3})\]"
    for system in ("BM25", "BM25 + rerank"):
        match = re.search(
            rf"^{re.escape(system)}\s+nDCG@10 {number}\s+MRR@10 {number}", text, flags=re.M
        )
        assert match is not None, f"no figures for {system}"
        mean, low, high = (float(match.group(i)) for i in (1, 2, 3))
        assert 0.0 < low <= mean <= high <= 1.0
    assert "queries: 35 judged" in text
    assert "BM25 + rerank - BM25:" in text and "better" in text and "tied" in text
    assert re.search(r"^verdict: (reranking helps|reranking hurts|no significant)", text, re.M)
    # The TREC run files, and the command scoring them against each other without a server.
    assert "bm25.trec" in text and "rerank.trec" in text and "summary.json" in text
    assert "verdict: rerank.trec is" in text or "verdict: no significant difference" in text
    # Two instructions side by side on the Qwen3 server, each against BM25 and against each other.
    assert "BM25 + rerank 2 - BM25 + rerank 1:" in text
    assert text.count("verdict (BM25 + rerank ") == 2
    # The "your own data" section round-tripped a set through the documented file format.
    assert "read back: 2 queries, 3 passages" in text
    assert _images(nb) >= 1
