"""Right scores for every client on every server: the prompt-detection matrix (issue 9).

Servers: ``rerank-serve`` defaults (the template, with an API key), the client-formatting
opt-out, ``--family qwen3-reranker`` on a directory whose name does not say so, and MiniLM.
Clients: ours on ``auto`` and on each explicit mode, both adapters, and a plain ``httpx.post``
of query and documents as any third-party client sends them. Every cell equals the
transformers reference of the model's official prompt within 1e-4, or raises the typed error
of an explicit contradiction. One cell is wrong by nature and asserted to be: a Qwen3 model on
a server without a template, called by a client that does not format. Each measured error is
written to tests/artifacts/prompt_matrix.json (the README's table comes from it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.servers import ServerHandle, run_reference

from rerank_plugins import RerankClient, RerankConfigError
from rerank_plugins.prompts import format_document, format_query

QUERY = "how do I read a JSON file in Python"
DOCS = [
    "Boil the pasta for nine minutes in salted water.",
    "json.load(f) parses a JSON file opened with open() into a dict.",
    "csv.reader yields each row of a CSV file as a list.",
    "Jackson's ObjectMapper reads JSON into Java objects.",
]
SERVERS = ["tiny_server_template", "tiny_server", "tiny_server_family", "minilm_server"]
CLIENTS = ["auto", "server", "client", "raw", "llamaindex", "langchain", "third_party"]
OK, CONTRADICTION, WRONG = "ok", "contradiction", "wrong by nature"
EXPECTED = {
    # rerank-serve's default: the server owns the prompt.
    "tiny_server_template": {"client": CONTRADICTION, "raw": CONTRADICTION},
    # The opt-out: no template, so the client must format; a plain client cannot be right.
    "tiny_server": {"server": CONTRADICTION, "third_party": WRONG},
    "tiny_server_family": {"client": CONTRADICTION, "raw": CONTRADICTION},
    # A cross-encoder: no template, no Qwen3 prompt.
    "minilm_server": {"server": CONTRADICTION, "client": CONTRADICTION},
}
TOLERANCE = 1e-4
RESULTS = Path(__file__).resolve().parents[1] / "artifacts" / "prompt_matrix.json"
_reference_cache: dict[str, list[float]] = {}


def reference(server: ServerHandle) -> list[float]:
    """Transformers scores of the model's official prompt for (QUERY, each document)."""
    if server.name not in _reference_cache:
        payload: dict[str, Any] = {
            "model": str(server.model_path),
            "pairs": [[QUERY, d] for d in DOCS],
        }
        if server.kind == "qwen3":
            payload.update(kind="qwen3", format="official", instruction=None)
        else:
            payload.update(kind="minilm", max_length=256)
        _reference_cache[server.name] = run_reference(payload)["scores"]
    return _reference_cache[server.name]


def ours(mode: str) -> Callable[[ServerHandle], list[float]]:
    def run(server: ServerHandle) -> list[float]:
        with RerankClient(server.base_url, api_key=server.api_key, prompt_mode=mode) as client:
            query, docs = QUERY, DOCS
            if mode == "raw" and server.kind == "qwen3":
                # raw sends text as given: a caller who formats the prompt gets it scored.
                query, docs = format_query(QUERY), [format_document(d) for d in DOCS]
            result = client.rerank(query, docs)
        return [score for _, score in sorted((i.index, i.score) for i in result)]

    return run


def llamaindex(server: ServerHandle) -> list[float]:
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    nodes = [NodeWithScore(node=TextNode(text=d), score=1.0) for d in DOCS]
    reranker = VLLMRerank(base_url=server.base_url, api_key=server.api_key)
    out = reranker.postprocess_nodes(nodes, query_str=QUERY)
    return [n.score for n in sorted(out, key=lambda n: n.node.metadata["original_index"])]


def langchain(server: ServerHandle) -> list[float]:
    from langchain_core.documents import Document

    from rerank_plugins.langchain import VLLMRerank

    reranker = VLLMRerank(base_url=server.base_url, api_key=server.api_key)
    out = reranker.compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    ordered = sorted(out, key=lambda d: d.metadata["original_index"])
    return [d.metadata["relevance_score"] for d in ordered]


def third_party(server: ServerHandle) -> list[float]:
    """What the seed article's requests.post, the Cohere SDK or LiteLLM send: plain text."""
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    response = httpx.post(
        f"{server.base_url}/v1/rerank",
        json={"model": server.model_name, "query": QUERY, "documents": DOCS},
        headers=headers,
        timeout=60,
    )
    response.raise_for_status()
    results = response.json()["results"]
    return [r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])]


CALLERS: dict[str, Callable[[ServerHandle], list[float]]] = {
    "auto": ours("auto"),
    "server": ours("server"),
    "client": ours("client"),
    "raw": ours("raw"),
    "llamaindex": llamaindex,
    "langchain": langchain,
    "third_party": third_party,
}


def record(server: str, client: str, outcome: str, error: float | None) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    table.setdefault(server, {})[client] = {"outcome": outcome, "max_abs_error": error}
    RESULTS.write_text(json.dumps(table, indent=1, sort_keys=True))


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("server_name", SERVERS)
def test_every_cell_is_right_or_a_typed_contradiction(request, server_name, client):
    server: ServerHandle = request.getfixturevalue(server_name)
    expected = EXPECTED[server_name].get(client, OK)
    if expected == CONTRADICTION:
        with pytest.raises(RerankConfigError, match=r"prompt_mode=|not a Qwen3-Reranker") as info:
            CALLERS[client](server)
        # The error says what the server does and what to set.
        assert "prompt_mode='auto'" in str(info.value) or "prompt_mode='client'" in str(info.value)
        record(server_name, client, "RerankConfigError", None)
        return
    scores = CALLERS[client](server)
    error = max(abs(a - b) for a, b in zip(scores, reference(server), strict=True))
    record(server_name, client, "scores", error)
    if expected == WRONG:
        assert error > 100 * TOLERANCE, "a plain client on the opt-out server cannot be right"
    else:
        assert error <= TOLERANCE


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the requests the client sends (to report what detection costs)."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


@pytest.mark.parametrize("server_name", SERVERS)
def test_detection_costs_a_few_requests_once_per_client(request, server_name):
    import time

    server: ServerHandle = request.getfixturevalue(server_name)
    transport = CountingTransport()
    with RerankClient(server.base_url, api_key=server.api_key, transport=transport) as client:
        start = time.perf_counter()
        info = client.server_info()
        elapsed = time.perf_counter() - start
        learnt = list(transport.paths)
        client.rerank(QUERY, DOCS)
        client.rerank(QUERY, DOCS)
    # /version, /v1/models, the probe (twice with a key: first without it), and in client
    # mode one /tokenize; then each call is exactly one request (4 short documents).
    assert learnt[:2] == ["GET /version", "GET /v1/models"]
    assert len(learnt) <= 5
    assert transport.paths[len(learnt) :] == ["POST /v2/rerank"] * 2
    assert info.prompt_mode == {"tiny_server": "client", "minilm_server": "raw"}.get(
        server_name, "server"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    table.setdefault(server_name, {})["_detection"] = {
        "requests": learnt,
        "milliseconds": round(elapsed * 1000, 1),
        "prompt_detection": info.prompt_detection,
    }
    RESULTS.write_text(json.dumps(table, indent=1, sort_keys=True))
