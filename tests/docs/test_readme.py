"""Every Python example in README.md and docs/ runs against a real server, as a user would run it.

Both languages' pages count: a Chinese page's example is run like its English twin. A block whose
first line is ``# Qwen3-Reranker`` runs against the tiny Qwen3 reranker; the others run on
MiniLM's real scores. Only the server a block needs is started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "README.zh-CN.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text(encoding="utf-8"))


def _server_for(code: str) -> str:
    return "tiny_server" if code.startswith("# Qwen3-Reranker") else "minilm_server"


EXAMPLES = [
    pytest.param(
        page, number, _server_for(code), id=f"{page.relative_to(ROOT).as_posix()}:{number}"
    )
    for page in PAGES
    if page.exists()
    for number, code in enumerate(_blocks(page))
]


def test_readme_and_docs_have_examples():
    assert len(_blocks(ROOT / "README.md")) >= 3  # the client, LlamaIndex and LangChain
    for page in ("client", "llamaindex", "langchain", "production", "prompt"):
        assert _blocks(ROOT / "docs" / "en" / f"{page}.md"), page
    for page in ("client", "llamaindex", "langchain"):
        assert _blocks(ROOT / "docs" / "zh" / f"{page}.md"), page


@pytest.mark.parametrize(("page", "number", "server_name"), EXAMPLES)
def test_example_runs(page, number, server_name, request, tmp_path):
    code = _blocks(page)[number]
    server = request.getfixturevalue(server_name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    env["RERANK_BASE_URL"] = server.base_url
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "an example should show its result"
    json_doc = "json.load(f) parses a JSON file opened with open() into a dict."
    if server_name == "minilm_server" and json_doc in code:
        # The JSON document ranks first on MiniLM's real scores.
        assert out.stdout.splitlines()[0].endswith(json_doc)
    if "no-such-model" in code:
        assert out.stdout.startswith("404 ")
