"""Reliability: property-based bad inputs through the client and both adapters (MockTransport).

A canned, always-valid server isolates input handling: every generated call either returns a
valid ranking covering exactly the inputs, or raises RerankInputError / RerankConfigError /
a documented TypeError (adapters: also their documented ValueError for a missing query); the
caller's objects are never changed. Over 1,000 examples in total.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from support.checks import assert_ranking
from support.fault_proxy import RERANK_PATHS, SCORE_PATHS, Ledger

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConfigError,
    RerankError,
    RerankInputError,
)
from rerank_plugins.langchain import VLLMRerank as LangChainRerank
from rerank_plugins.llamaindex import VLLMRerank as LlamaIndexRerank

BASE = "http://rerank.test"
CLASS = "property_inputs"


# --- a canned valid server ---------------------------------------------------------------------


def _score(text: str, index: int) -> float:
    return (sum(map(ord, text[:64])) % 97) / 97 + index * 1e-6


def canned(seen: list[str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if seen is not None:
            seen.append(path)
        if path == "/version":
            return httpx.Response(200, json={"version": "0.32.0"})
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "root": "m"}]})
        if request.method != "POST":
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        if path == "/tokenize":
            tokens = list(range(len(body["prompt"].encode()) // 4 + 1))
            return httpx.Response(200, json={"tokens": tokens, "count": len(tokens)})
        if path == "/detokenize":
            return httpx.Response(200, json={"prompt": "x" * len(body["tokens"])})
        docs = body["documents"]
        usage = {"prompt_tokens": len(docs), "total_tokens": len(docs)}
        if path in SCORE_PATHS:
            data = [{"index": i, "score": _score(d, i)} for i, d in enumerate(docs)]
            return httpx.Response(200, json={"model": "m", "data": data, "usage": usage})
        if path not in RERANK_PATHS:
            return httpx.Response(404, json={"detail": "Not Found"})
        results = [
            {"index": i, "document": {"text": d}, "relevance_score": _score(d, i)}
            for i, d in enumerate(docs)
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        if body.get("top_n"):
            results = results[: body["top_n"]]
        return httpx.Response(200, json={"model": "m", "results": results, "usage": usage})

    return handler


# --- strategies --------------------------------------------------------------------------------

surrogates = st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3
)
plain = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
with_surrogate = st.builds(lambda a, s, b: a + s + b, plain, surrogates, plain)
huge = st.sampled_from(["x" * 200_000, "长" * 60_000, "word " * 30_000, " " * 5_000])
texts = st.one_of(
    plain, plain, plain, with_surrogate, huge, st.sampled_from(["", " ", "\n\t", "\x00"])
)
odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.dictionaries(plain, plain, max_size=3),
    st.lists(plain, max_size=3),
    st.tuples(plain),
    st.frozensets(st.integers(), max_size=3),
)
queries = st.one_of(texts, texts, odd)
doc_items = st.one_of(texts, texts, texts, odd, st.lists(st.lists(plain, max_size=2), max_size=2))
documents = st.one_of(
    st.lists(doc_items, max_size=8),
    st.lists(plain.filter(str.strip), min_size=1, max_size=8),
    st.lists(plain.filter(str.strip), min_size=1, max_size=4).map(tuple),
    st.dictionaries(plain, plain, min_size=1, max_size=4),
    texts,
    odd,
    st.lists(st.lists(plain, max_size=3), min_size=1, max_size=3),
)
top_ns = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=12),
    st.booleans(),
    st.floats(),
    st.text(max_size=3),
    st.just(2.0),
    st.lists(st.integers(), max_size=2),
)

SETTINGS = {
    "deadline": None,
    "database": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


# --- expectations ------------------------------------------------------------------------------


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def problems(query: Any, docs: Any, top_n: Any) -> set[str]:
    """Why a call must fail (empty: it may succeed). 'strict' reasons demand RerankInputError."""
    found = set()
    if not isinstance(query, str):
        found.add("query-type")
    elif not query.strip():
        found.add("strict:empty-query")
    elif has_surrogate(query):
        found.add("strict:surrogate")
    if isinstance(docs, dict):
        found.add("strict:dict-documents")
    elif isinstance(docs, list | tuple):
        for d in docs:
            if not isinstance(d, str):
                found.add("document-type")
            elif has_surrogate(d):
                found.add("strict:surrogate")
    elif not isinstance(docs, str):
        found.add("documents-type")
    elif has_surrogate(docs):
        found.add("strict:surrogate")
    if top_n is not None and (type(top_n) is not int or top_n < 1):
        found.add("top_n")
    return found


def clearly_fine(query: Any, docs: Any, top_n: Any) -> bool:
    """Inputs any client must rank: a real query, a list/tuple of non-blank str, a good top_n."""
    return (
        not problems(query, docs, top_n)
        and isinstance(docs, list | tuple)
        and all(d.strip() and "\x00" not in d for d in docs)
        and "\x00" not in query
    )


def check(
    ledger: Ledger,
    call: Callable[[], Any],
    reasons: set[str],
    fine: bool,
    validate: Callable[[Any], None],
    allowed: tuple[type[BaseException], ...] = (RerankInputError, RerankConfigError, TypeError),
    allow: Callable[[BaseException], bool] = lambda exc: False,
) -> None:
    ledger.case(CLASS)
    try:
        result = call()
    except RerankError as exc:
        ledger.typed(CLASS, exc)
        error: BaseException | None = exc
    except Exception as exc:
        if isinstance(exc, allowed) or allow(exc):
            ledger.typed(CLASS, exc)
            error = exc
        else:
            ledger.bug(CLASS, exc)
            raise AssertionError(f"non-typed exception {type(exc).__name__}: {exc}") from exc
    else:
        error = None
    if error is None:
        assert not reasons, f"should have failed ({sorted(reasons)}), got {result!r:.200}"
        validate(result)
        return
    assert not fine, f"valid input rejected: {error!r}"
    assert isinstance(error, allowed) or allow(error), f"unexpected {error!r}"
    if reasons and all(r.startswith("strict:") for r in reasons):
        assert isinstance(error, RerankInputError), f"{sorted(reasons)} -> {error!r}"


# --- the client --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_client() -> Any:
    with RerankClient(BASE, transport=httpx.MockTransport(canned())) as client:
        yield client


@settings(max_examples=400, **SETTINGS)
@given(query=queries, docs=documents, top_n=top_ns)
def test_client_rerank_bad_inputs(sync_client, ledger, query, docs, top_n):
    before_q, before_d = copy.deepcopy(query), copy.deepcopy(docs)
    reasons, fine = problems(query, docs, top_n), clearly_fine(query, docs, top_n)
    check(
        ledger,
        lambda: sync_client.rerank(query, docs, top_n=top_n),
        reasons,
        fine,
        lambda r: assert_ranking(r, list(docs), top_n),
    )
    assert query == before_q and docs == before_d, "the caller's input changed"


@settings(max_examples=150, **SETTINGS)
@given(query=queries, docs=documents)
def test_client_score_bad_inputs(sync_client, ledger, query, docs):
    before_q, before_d = copy.deepcopy(query), copy.deepcopy(docs)

    def validate(result: Any) -> None:
        assert len(result.scores) == len(docs)
        assert all(type(s) is float and math.isfinite(s) for s in result.scores)

    check(
        ledger,
        lambda: sync_client.score(query, docs),
        problems(query, docs, None),
        clearly_fine(query, docs, None),
        validate,
    )
    assert query == before_q and docs == before_d


def test_async_client_rerank_bad_inputs(ledger):
    loop = asyncio.new_event_loop()
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(canned()))

    @settings(max_examples=150, **SETTINGS)
    @given(query=queries, docs=documents, top_n=top_ns)
    def run(query: Any, docs: Any, top_n: Any) -> None:
        before_q, before_d = copy.deepcopy(query), copy.deepcopy(docs)
        check(
            ledger,
            lambda: loop.run_until_complete(client.rerank(query, docs, top_n=top_n)),
            problems(query, docs, top_n),
            clearly_fine(query, docs, top_n),
            lambda r: assert_ranking(r, list(docs), top_n),
        )
        assert query == before_q and docs == before_d

    try:
        run()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


# --- the adapters ------------------------------------------------------------------------------

node_items = st.one_of(texts, texts, texts, texts, odd)
adapter_top_n = st.one_of(st.none(), st.integers(min_value=1, max_value=10))


def _query_error(exc: BaseException) -> bool:
    # The adapters document a ValueError when no query is given at all.
    return type(exc) is ValueError and "query" in str(exc)


def _allowed_for(reasons: set[str]) -> Callable[[BaseException], bool]:
    def allow(exc: BaseException) -> bool:
        # A list element that is not a node/Document at all: the framework's own pydantic
        # validation (LlamaIndex's events) may reject it before the adapter sees it.
        if "element-type" in reasons and isinstance(exc, pydantic.ValidationError):
            return True
        return _query_error(exc)

    return allow


def _adapter_expectations(query: Any, items: list[Any]) -> tuple[set[str], bool]:
    texts_ = [t for t in items if isinstance(t, str)]
    reasons = problems(query, texts_, None)
    if any(not isinstance(t, str) for t in items):
        reasons.add("element-type")
    if not items:  # nothing to rerank: [] or an error about the query are both fine
        return set(), False
    return reasons, clearly_fine(query, texts_, None) and not reasons


def _validate_adapter(out: list[Any], items: list[Any], top_n: int | None, llama: bool) -> None:
    n = len(items) if top_n is None else min(top_n, len(items))
    assert len(out) == n
    metas = [o.node.metadata if llama else o.metadata for o in out]
    order = [m["original_index"] for m in metas]
    assert len(set(order)) == n and all(0 <= i < len(items) for i in order)
    for o, i in zip(out, order, strict=True):
        text = o.node.get_content() if llama else o.page_content
        assert text == items[i]


def _llama_inputs(items: list[Any]) -> list[Any]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) if isinstance(t, str) else t
        for i, t in enumerate(items)
    ]


def _lc_inputs(items: list[Any]) -> list[Any]:
    return [
        Document(page_content=t, id=f"d{i}") if isinstance(t, str) else t
        for i, t in enumerate(items)
    ]


def _dump(objs: list[Any]) -> list[Any]:
    return [o.model_dump() if hasattr(o, "model_dump") else o for o in objs]


@pytest.fixture(scope="module")
def async_client() -> Any:
    return AsyncRerankClient(BASE, "m", transport=httpx.MockTransport(canned()))


@pytest.mark.parametrize("framework", ["llamaindex", "langchain"])
def test_adapters_bad_inputs_sync(ledger, framework):
    llama = framework == "llamaindex"
    sync = RerankClient(BASE, "m", transport=httpx.MockTransport(canned()))
    client = AsyncRerankClient(BASE, "m")

    @settings(max_examples=200, **SETTINGS)
    @given(query=queries, items=st.lists(node_items, max_size=6), top_n=adapter_top_n)
    def run(query: Any, items: list[Any], top_n: int | None) -> None:
        cls = LlamaIndexRerank if llama else LangChainRerank
        adapter = cls(client=client, top_n=top_n)
        adapter._sync_client = sync  # the canned transport for the sync path
        inputs = _llama_inputs(items) if llama else _lc_inputs(items)
        before = _dump(copy.deepcopy(inputs))
        reasons, fine = _adapter_expectations(query, items)

        def call() -> Any:
            if llama:
                return adapter.postprocess_nodes(inputs, query_str=query)
            return list(adapter.compress_documents(inputs, query))

        check(
            ledger,
            call,
            reasons,
            fine,
            lambda out: _validate_adapter(out, items, top_n, llama),
            allow=_allowed_for(reasons),
        )
        assert _dump(inputs) == before, "the caller's objects changed"

    try:
        run()
    finally:
        sync.close()


@pytest.mark.parametrize("framework", ["llamaindex", "langchain"])
def test_adapters_bad_inputs_async(ledger, framework):
    llama = framework == "llamaindex"
    loop = asyncio.new_event_loop()
    client = AsyncRerankClient(BASE, "m", transport=httpx.MockTransport(canned()))

    @settings(max_examples=60, **SETTINGS)
    @given(query=queries, items=st.lists(node_items, max_size=6))
    def run(query: Any, items: list[Any]) -> None:
        cls = LlamaIndexRerank if llama else LangChainRerank
        adapter = cls(client=client)
        inputs = _llama_inputs(items) if llama else _lc_inputs(items)
        before = _dump(copy.deepcopy(inputs))
        reasons, fine = _adapter_expectations(query, items)

        def call() -> Any:
            if llama:
                return loop.run_until_complete(adapter.apostprocess_nodes(inputs, query_str=query))
            return list(loop.run_until_complete(adapter.acompress_documents(inputs, query)))

        check(
            ledger,
            call,
            reasons,
            fine,
            lambda out: _validate_adapter(out, items, None, llama),
            allow=_allowed_for(reasons),
        )
        assert _dump(inputs) == before

    try:
        run()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


# --- the contract's named cases ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("query", "docs", "where"),
    [
        ("fine query", ["ok", "bad \ud800 doc", "ok"], r"documents\[1\]"),
        ("fine query", ["ok", "ok", "x\udfff"], r"documents\[2\]"),
        ("bad \udc00 query", ["ok"], r"query"),
    ],
)
def test_lone_surrogate_is_an_input_error_naming_its_position(ledger, mode, query, docs, where):
    seen: list[str] = []
    transport = httpx.MockTransport(canned(seen))
    before = copy.deepcopy(docs)
    ledger.case(CLASS)
    with pytest.raises(RerankInputError, match=where):
        if mode == "sync":
            with RerankClient(BASE, transport=transport) as client:
                client.rerank(query, docs)
        else:

            async def go() -> None:
                async with AsyncRerankClient(BASE, transport=transport) as client:
                    await client.rerank(query, docs)

            asyncio.run(go())
    assert docs == before
    assert not set(seen) & set(RERANK_PATHS)


@pytest.mark.parametrize(
    "docs",
    [{"a": "first text", "b": "second text"}, {"only": "one"}],
)
def test_dict_documents_are_rejected_not_reranked_by_key(ledger, docs):
    seen: list[str] = []
    before = copy.deepcopy(docs)
    ledger.case(CLASS)
    with RerankClient(BASE, transport=httpx.MockTransport(canned(seen))) as client:
        with pytest.raises(RerankInputError):
            client.rerank("query", docs)
        with pytest.raises(RerankInputError):
            client.score("query", docs)
    assert docs == before
    assert not set(seen) & {*RERANK_PATHS, *SCORE_PATHS}


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_empty_query_is_an_input_error(ledger, query):
    ledger.case(CLASS)
    client = RerankClient(BASE, transport=httpx.MockTransport(canned()))
    with client, pytest.raises(RerankInputError):
        client.rerank(query, ["a", "b"])


def test_caller_list_is_not_mutated_by_truncation(ledger):
    """A document long enough to be cut: the caller's list keeps the full text."""
    ledger.case(CLASS)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 64}]})
        return canned()(request)

    docs = ["short", "long " * 500]
    before = copy.deepcopy(docs)
    with RerankClient(BASE, transport=httpx.MockTransport(handler)) as client:
        result = client.rerank("query", docs)
    assert docs == before
    assert sorted(result.indices) == [0, 1]
    assert {item.document for item in result.items} == set(docs), "items carry the originals"
