"""Reliability of the LlamaIndex and LangChain adapters behind the fault proxy (real MiniLM).

With ``fail_open=True`` a service failure (connection, status, response, timeout) returns the
inputs in their original order marked ``reranked=False``; with ``fail_open=False`` the typed
error comes through. Either way within the deadline and with the caller's objects unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from typing import Any

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from support.fault_proxy import RERANK_PATHS, FaultProxy, wait_until

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConnectionError,
    RerankError,
    RerankResponseError,
    RerankStatusError,
    RerankTimeoutError,
)
from rerank_plugins.langchain import VLLMRerank as LangChainRerank
from rerank_plugins.llamaindex import VLLMRerank as LlamaIndexRerank

DEADLINE = 3.0
# Seconds an adapter call may run past its deadline (scheduling on a loaded 2-core machine).
# The stall holds a request until the client leaves and the trickle for 12 s, so an adapter
# whose client ignored the deadline still fails the bound; the typed error (or the fail-open
# fallback) and the proxy seeing the client hang up prove the mechanism.
GRACE = 3.0
QUERY = "What is the capital of France?"
DOCS = [
    "Bananas are yellow and rich in potassium.",
    "The Eiffel Tower is a landmark in Paris.",
    "Paris is the capital and largest city of France.",
    "Berlin is the capital of Germany.",
]


@pytest.fixture(scope="module")
def reference(minilm_server: Any) -> list[int]:
    with RerankClient(minilm_server.base_url, minilm_server.model_name) as client:
        return client.rerank(QUERY, DOCS).indices


# --- faults and the error each must surface as ----------------------------------------------


def _nan_first(body: Any) -> Any:
    body = copy.deepcopy(body)
    body["results"][0]["relevance_score"] = float("nan")
    return body


def _drop_last(body: Any) -> Any:
    body = copy.deepcopy(body)
    body["results"] = body["results"][:-1]
    return body


FAULTS: dict[str, tuple[Any, type[RerankError]]] = {
    "reset": (lambda p: p.reset(RERANK_PATHS, times=None), RerankConnectionError),
    "503": (lambda p: p.status(503, RERANK_PATHS, times=None, retry_after="0"), RerankStatusError),
    "429-garbage-retry-after": (
        lambda p: p.status(429, RERANK_PATHS, times=None, retry_after="soon"),
        RerankStatusError,
    ),
    "not-json": (lambda p: p.replace_body(b"<html>oops</html>", RERANK_PATHS), RerankResponseError),
    "nan-score": (lambda p: p.replace_body(_nan_first, RERANK_PATHS), RerankResponseError),
    "fewer-results": (lambda p: p.replace_body(_drop_last, RERANK_PATHS), RerankResponseError),
    "stall": (lambda p: p.stall(RERANK_PATHS), RerankTimeoutError),
    "trickle": (lambda p: p.trickle(RERANK_PATHS, give_up_after=12), RerankTimeoutError),
}


def _client(proxy: FaultProxy, minilm_server: Any, deadline: float) -> AsyncRerankClient:
    return AsyncRerankClient(
        proxy.url,
        minilm_server.model_name,
        deadline=deadline,
        timeout=10,
        max_retries=1,
        retry_backoff=0.01,
    )


def _nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(
            node=TextNode(text=text, id_=f"n{i}", metadata={"source": f"s{i}", "tags": ["a"]}),
            score=1.0 - i / 10,
        )
        for i, text in enumerate(DOCS)
    ]


def _documents() -> list[Document]:
    return [
        Document(page_content=text, id=f"d{i}", metadata={"source": f"s{i}", "tags": ["a"]})
        for i, text in enumerate(DOCS)
    ]


def _dump(objs: list[Any]) -> list[Any]:
    return [o.model_dump() for o in objs]


def run_adapter(
    framework: str,
    mode: str,
    proxy: FaultProxy,
    minilm_server: Any,
    inputs: list[Any],
    deadline: float = DEADLINE,
    **kw: Any,
) -> list[Any]:
    """One adapter call on a fresh adapter and client; the async path in its own loop."""
    cls = LlamaIndexRerank if framework == "llamaindex" else LangChainRerank

    def call_sync(adapter: Any) -> list[Any]:
        if framework == "llamaindex":
            return adapter.postprocess_nodes(inputs, query_str=QUERY)
        return list(adapter.compress_documents(inputs, QUERY))

    async def call_async() -> list[Any]:
        async with _client(proxy, minilm_server, deadline) as client:
            adapter = cls(client=client, **kw)
            if framework == "llamaindex":
                return await adapter.apostprocess_nodes(inputs, query_str=QUERY)
            return list(await adapter.acompress_documents(inputs, QUERY))

    if mode == "async":
        return asyncio.run(call_async())
    client = _client(proxy, minilm_server, deadline)
    adapter = cls(client=client, **kw)
    try:
        return call_sync(adapter)
    finally:
        sync_client = getattr(adapter, "_sync_client", None)
        if sync_client is not None:  # the adapter's lazily made sync twin
            sync_client.close()


def _texts(framework: str, out: list[Any]) -> list[str]:
    if framework == "llamaindex":
        return [n.node.get_content() for n in out]
    return [d.page_content for d in out]


def _meta(framework: str, out: list[Any]) -> list[dict[str, Any]]:
    return [n.node.metadata if framework == "llamaindex" else n.metadata for n in out]


def _inputs(framework: str) -> list[Any]:
    return _nodes() if framework == "llamaindex" else _documents()


FRAMEWORKS = ("llamaindex", "langchain")
MODES = ("sync", "async")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_adapter_through_the_proxy_reranks(proxy, minilm_server, reference, framework, mode):
    inputs = _inputs(framework)
    before = _dump(copy.deepcopy(inputs))
    out = run_adapter(framework, mode, proxy, minilm_server, inputs, deadline=30)
    assert _texts(framework, out) == [DOCS[i] for i in reference]
    assert all(m["reranked"] is True for m in _meta(framework, out))
    assert _dump(inputs) == before


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_adapter_built_from_base_url_cuts_to_top_n(proxy, minilm_server, reference, framework):
    cls = LlamaIndexRerank if framework == "llamaindex" else LangChainRerank
    adapter = cls(base_url=proxy.url, model=minilm_server.model_name, top_n=2)
    inputs = _inputs(framework)
    before = _dump(copy.deepcopy(inputs))
    if framework == "llamaindex":
        out = adapter.postprocess_nodes(inputs, query_str=QUERY)
    else:
        out = list(adapter.compress_documents(inputs, QUERY))
    assert _texts(framework, out) == [DOCS[i] for i in reference[:2]]
    assert _dump(inputs) == before
    if getattr(adapter, "_sync_client", None) is not None:
        adapter._sync_client.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("fail_open", [True, False], ids=["fail_open", "fail_closed"])
def test_adapter_under_fault(proxy, minilm_server, ledger, framework, mode, fault, fail_open):
    arm, error = FAULTS[fault]
    arm(proxy)
    inputs = _inputs(framework)
    before = _dump(copy.deepcopy(inputs))
    cls_name = "adapters"
    ledger.case(cls_name)
    start = time.monotonic()
    out: list[Any] | None = None
    raised: BaseException | None = None
    try:
        out = run_adapter(framework, mode, proxy, minilm_server, inputs, fail_open=fail_open)
    except RerankError as exc:
        raised = exc
        ledger.typed(cls_name, exc)
    except Exception as exc:
        ledger.bug(cls_name, exc)
        raise AssertionError(f"non-typed exception {type(exc).__name__}: {exc}") from exc
    finally:
        elapsed = time.monotonic() - start
        ledger.over_deadline(f"adapters/{fault}", elapsed, DEADLINE)
    assert elapsed <= DEADLINE + GRACE, f"{elapsed:.2f}s for a deadline of {DEADLINE}s"
    if error is RerankTimeoutError:  # the deadline cut the request: the client hung up
        assert wait_until(lambda: proxy.stats.abandoned_on(RERANK_PATHS) >= 1), proxy.stats
    assert _dump(inputs) == before, "the caller's inputs changed"
    if fail_open:
        assert raised is None, f"fail_open=True raised {raised!r}"
        assert out is not None
        assert _texts(framework, out) == DOCS, "fail-open must keep every input, in order"
        assert all(m["reranked"] is False for m in _meta(framework, out))
        if framework == "llamaindex":  # the retriever's scores, not made-up ones
            assert [n.score for n in out] == [n.score for n in inputs]
            assert all(n.score is not None and math.isfinite(n.score) for n in out)
    else:
        assert out is None, f"expected {error.__name__}, got a result"
        assert isinstance(raised, error), f"expected {error.__name__}, got {raised!r}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fail_open_with_top_n_keeps_original_order(proxy, minilm_server, framework):
    proxy.reset(RERANK_PATHS, times=None)
    inputs = _inputs(framework)
    out = run_adapter(framework, "sync", proxy, minilm_server, inputs, fail_open=True, top_n=2)
    texts = _texts(framework, out)
    assert texts == DOCS[: len(texts)], "fail-open output must be the inputs in their order"
    assert len(texts) in (2, len(DOCS))
    assert all(m["reranked"] is False for m in _meta(framework, out))
