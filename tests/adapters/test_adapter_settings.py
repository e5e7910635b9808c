"""Unit tests (no server) of the client settings both adapters take: every ClientOptions key
reaches the client, unknown keywords and client= conflicts raise naming the argument,
secrets never show, serialization round-trips, and short rankings never lose inputs."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from prometheus_client import CollectorRegistry

from rerank_plugins import (
    AsyncRerankClient,
    RerankConfigError,
    RerankItem,
    RerankResponseError,
    RerankResult,
    Usage,
)
from rerank_plugins._adapters import client_option_names
from rerank_plugins.cache import InMemoryCache
from rerank_plugins.client import ClientOptions
from rerank_plugins.config import RerankConfig
from rerank_plugins.langchain import VLLMRerank as ChainRerank
from rerank_plugins.llamaindex import VLLMRerank as NodeRerank
from rerank_plugins.telemetry import OpenTelemetryTracing, PrometheusMetrics

URL = "http://127.0.0.1:9"  # discard port: nothing here ever connects
KEY = "s3cret-key-do-not-show"

# One non-default value per ClientOptions key. A key added to ClientOptions without an entry
# here fails test_every_option_has_a_test_value (and its own parametrized case) loudly.
VALUES: dict[str, Any] = {
    "route": "/v1/rerank",
    "score_route": "/v1/score",
    "prompt_mode": "server",
    "instruction": "Given a question, find the passage in a cookbook that answers it",
    "max_batch_size": 8,
    "max_concurrency": 3,
    "timeout": 5.0,
    "deadline": 30.0,
    "max_retries": 0,
    "retry_backoff": 0.1,
    "retry_backoff_max": 1.5,
    "truncate": False,
    "long_documents": "chunk",
    "images": "error",
    "max_connections": 7,
    "verify": False,
    "cert": ("/etc/ssl/client.crt", "/etc/ssl/client.key"),
    "proxy": "http://user:proxy-pass@127.0.0.1:3128",
    "trust_env": False,
    "routing_header": "X-Session-ID",
    "listwise": True,
    "cache": InMemoryCache(max_entries=10),
    "metrics": PrometheusMetrics(registry=CollectorRegistry()),
    "tracing": OpenTelemetryTracing(),
}

ADAPTERS = [pytest.param(NodeRerank, id="llamaindex"), pytest.param(ChainRerank, id="langchain")]
Adapter = type[NodeRerank] | type[ChainRerank]

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RerankConfig)}
SECRETS = {name for name, f in CONFIG_FIELDS.items() if not f.repr}


def default(name: str) -> Any:
    field = CONFIG_FIELDS[name]
    assert field.default is not dataclasses.MISSING, f"{name} has no plain default"
    return field.default


def value(name: str) -> Any:
    if name not in VALUES:
        pytest.fail(f"ClientOptions gained {name!r}: add a non-default test value to VALUES")
    return VALUES[name]


def dumps(adapter: Any) -> list[str]:
    """Every text form of an adapter a user or a framework may print or store."""
    texts = [repr(adapter), str(adapter), str(adapter.model_dump()), adapter.model_dump_json()]
    with warnings.catch_warnings():  # pydantic deprecates dict(); LlamaIndex keeps it
        warnings.simplefilter("ignore", DeprecationWarning)
        texts.append(str(adapter.dict()))
    if isinstance(adapter, NodeRerank):
        texts += [str(adapter.to_dict()), adapter.to_json()]
    return texts


def test_every_option_has_a_test_value() -> None:
    keys = ClientOptions.__required_keys__ | ClientOptions.__optional_keys__
    assert set(client_option_names()) == keys
    missing = sorted(keys - VALUES.keys())
    assert not missing, f"add non-default test values to VALUES for {missing}"
    for name in keys:
        assert name in CONFIG_FIELDS, f"ClientOptions key {name!r} is not a RerankConfig field"
        assert VALUES[name] != default(name), f"VALUES[{name!r}] is the default"


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name", client_option_names())
def test_option_reaches_the_client(adapter: Adapter, name: str) -> None:
    given = value(name)
    reranker = adapter(base_url=URL, **{name: given})
    if name == "instruction":
        # The adapter's field, sent with every call (see test_instruction_*); the client it
        # builds keeps no instruction of its own, so with_instruction(None) really clears it.
        assert reranker.instruction == given
        assert reranker.client.config.instruction is None
        return
    assert getattr(reranker.client.config, name) == given
    assert getattr(reranker._sync().config, name) == given  # the sync twin keeps it too
    others = {n: getattr(reranker.client.config, n) for n in client_option_names() if n != name}
    assert others == {n: default(n) for n in others}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_all_settings_at_once(adapter: Adapter) -> None:
    options = {name: value(name) for name in client_option_names()}
    reranker = adapter(base_url=URL + "/", model="m", api_key=KEY, top_n=2, **options)
    config = reranker.client.config
    assert (config.base_url, config.model, config.api_key) == (URL, "m", KEY)
    assert (reranker.base_url, reranker.model, reranker.top_n) == (URL, "m", 2)
    for name, given in options.items():
        if name != "instruction":
            assert getattr(config, name) == given, name
    assert reranker.instruction == options["instruction"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_option_value_raises_config_error(adapter: Adapter) -> None:
    with pytest.raises(RerankConfigError, match="timeout"):
        adapter(base_url=URL, timeout=-1)
    with pytest.raises(RerankConfigError, match="route"):
        adapter(base_url=URL, route="/nowhere")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_unknown_keyword_raises_type_error_naming_it(adapter: Adapter) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'topn'") as info:
        adapter(base_url=URL, topn=3)
    assert "did you mean 'top_n'?" in str(info.value)
    assert str(info.value).startswith("VLLMRerank()")
    with pytest.raises(TypeError, match=r"arguments 'timout' \(did you mean 'timeout'\?\), 'zz'"):
        adapter(base_url=URL, timout=5, zz=1)
    # Also next to a ready client, and before any client is built (no URL needed).
    with pytest.raises(TypeError, match="'topn'"):
        adapter(client=AsyncRerankClient(URL), topn=3)
    with pytest.raises(TypeError, match="'topn'"):
        adapter(topn=3)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_client_with_settings_raises_naming_them(adapter: Adapter) -> None:
    client = AsyncRerankClient(URL, "m")
    with pytest.raises(RerankConfigError, match=r"'api_key', 'timeout'") as info:
        adapter(client=client, api_key=KEY, timeout=5.0, top_n=2)
    assert KEY not in str(info.value)
    assert isinstance(info.value, ValueError)
    for name in ("base_url", "model", *client_option_names()):
        if name == "instruction":
            continue
        given = "http://other:1" if name == "base_url" else "other" if name == "model" else None
        given = value(name) if given is None else given
        with pytest.raises(RerankConfigError, match=repr(name)):
            adapter(client=client, **{name: given})


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_client_with_matching_or_unset_settings_is_fine(adapter: Adapter) -> None:
    client = AsyncRerankClient(URL, "m", timeout=5.0)
    reranker = adapter(client=client, base_url=URL + "/", model="m", timeout=5, api_key=None)
    assert reranker.client is client
    assert adapter(client=client, base_url=None, model=None).client is client


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_client_must_be_the_async_client(adapter: Adapter) -> None:
    with pytest.raises(TypeError, match=r"AsyncRerankClient\(config=client.config\)"):
        adapter(client=AsyncRerankClient(URL).to_sync())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str"):
        adapter(client=URL)  # type: ignore[arg-type]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_instruction_either_way(adapter: Adapter) -> None:
    instruction = value("instruction")
    client = AsyncRerankClient(URL, "m", instruction=instruction)
    assert adapter(client=client).instruction == instruction  # the client's, shown
    assert adapter(client=client, instruction="mine").instruction == "mine"  # not a conflict
    assert adapter(client=client).client.config.instruction == instruction
    assert adapter(base_url=URL, instruction="mine").with_instruction(None).instruction is None


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_secrets_never_show(adapter: Adapter) -> None:
    options = {name: value(name) for name in client_option_names()}
    reranker = adapter(base_url=URL, model="m", api_key=KEY, **options)
    hidden = [KEY, *(str(options[name]) for name in SECRETS & options.keys())]
    for text in dumps(reranker):
        for secret in hidden:
            assert secret not in text
    assert "api_key" not in reranker.model_dump()
    assert reranker.client.config.api_key == KEY
    shown = reranker.model_dump()
    for name in options.keys() - SECRETS - {"instruction"}:
        assert name in repr(reranker) and name in shown, name


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_dump_honours_include_exclude(adapter: Adapter) -> None:
    reranker = adapter(base_url=URL, timeout=5.0, top_n=2)
    assert reranker.model_dump(include={"top_n", "timeout"}) == {"top_n": 2, "timeout": 5.0} | (
        {"class_name": "VLLMRerank"} if adapter is NodeRerank else {}
    )
    assert "timeout" not in reranker.model_dump(exclude={"timeout"})
    assert "deadline" not in reranker.model_dump(exclude_none=True)


def rebuild(reranker: Any, **again: Any) -> Any:
    if isinstance(reranker, NodeRerank):
        via_dict = NodeRerank.from_dict(reranker.to_dict(), **again)
        via_json = NodeRerank.from_json(reranker.to_json(), **again)
        assert via_dict.client.config == via_json.client.config
        return via_json
    return ChainRerank(**json.loads(reranker.model_dump_json()), **again)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_serialized_settings_rebuild_an_equal_adapter(adapter: Adapter) -> None:
    options = {name: value(name) for name in client_option_names()}
    reranker = adapter(base_url=URL, model="m", api_key=KEY, top_n=2, min_keep=0, **options)
    secrets = {name: options[name] for name in SECRETS & options.keys()}
    rebuilt = rebuild(reranker, api_key=KEY, **secrets)
    assert rebuilt.client.config == reranker.client.config
    assert rebuilt.model_dump() == reranker.model_dump()
    assert (rebuilt.top_n, rebuilt.min_keep, rebuilt.instruction) == (2, 0, options["instruction"])
    # Without the secrets passed again the key is simply absent (else RERANK_API_KEY).
    assert rebuild(reranker).client.config.api_key is None


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_rebuild_from_a_shared_client(adapter: Adapter) -> None:
    client = AsyncRerankClient(URL, "m", api_key=KEY, timeout=5.0)
    reranker = adapter(client=client, top_n=2)
    again = rebuild(reranker, client=client)
    assert again.client is client and again.top_n == 2


# Short or odd rankings: the adapters must never silently lose the caller's inputs.


def short_result(count: int, top_n: int | None) -> RerankResult:
    """A ranking that leaves out the last document it should have ranked."""
    wanted = count if top_n is None else min(top_n, count)
    items = tuple(RerankItem(i, 1.0 - i / 10, f"t{i}") for i in range(wanted - 1))
    return RerankResult(items, "m", Usage(), "rid")


def fake_clients(reranker: Any, result: Callable[[int, int | None], RerankResult]) -> list[Any]:
    """Replace both clients of an adapter by stubs returning ``result``; record their calls."""
    calls: list[Any] = []

    def sync_rerank(query: str, texts: Sequence[str], **kwargs: Any) -> RerankResult:
        calls.append((query, list(texts), kwargs))
        return result(len(texts), kwargs.get("top_n"))

    async def async_rerank(query: str, texts: Sequence[str], **kwargs: Any) -> RerankResult:
        return sync_rerank(query, texts, **kwargs)

    sync = reranker.client.to_sync()
    sync.rerank = sync_rerank
    reranker._sync_client = sync
    reranker.client.rerank = async_rerank
    return calls


def full_result(count: int, top_n: int | None) -> RerankResult:
    """All documents ranked in reverse input order."""
    items = tuple(RerankItem(i, i / 10, f"t{i}") for i in reversed(range(count)))
    return RerankResult(items[:top_n], "m", Usage(), "rid")


async def run(reranker: Any, use_async: bool) -> list[tuple[str, bool]]:
    """(text, reranked) of what the adapter returns for five inputs."""
    texts = [f"t{i}" for i in range(5)]
    if isinstance(reranker, NodeRerank):
        nodes = [NodeWithScore(node=TextNode(text=t, id_=t), score=0.5) for t in texts]
        call = reranker.apostprocess_nodes if use_async else reranker.postprocess_nodes
        out = call(nodes, query_str="q")
        out = await out if use_async else out
        return [(n.node.get_content(), n.node.metadata["reranked"]) for n in out]
    docs = [Document(page_content=t, id=t) for t in texts]
    if use_async:
        got = await reranker.acompress_documents(docs, "q")
    else:
        got = reranker.compress_documents(docs, "q")
    return [(d.page_content, d.metadata["reranked"]) for d in got]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("top_n", [None, 3])
async def test_short_ranking_raises(adapter: Adapter, use_async: bool, top_n: int | None) -> None:
    reranker = adapter(base_url=URL, top_n=top_n)
    fake_clients(reranker, short_result)
    with pytest.raises(RerankResponseError, match="covers"):
        await run(reranker, use_async)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_short_ranking_fails_open_with_every_input(adapter: Adapter, use_async: bool) -> None:
    reranker = adapter(base_url=URL, fail_open=True)
    fake_clients(reranker, short_result)
    out = await run(reranker, use_async)
    assert out == [(f"t{i}", False) for i in range(5)]
    reranker = adapter(base_url=URL, fail_open=True, top_n=3)
    fake_clients(reranker, short_result)
    assert await run(reranker, use_async) == [(f"t{i}", False) for i in range(3)]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_full_ranking_passes_settings_per_call(adapter: Adapter, use_async: bool) -> None:
    reranker = adapter(base_url=URL, top_n=2, instruction="I")
    calls = fake_clients(reranker, full_result)
    assert await run(reranker, use_async) == [("t4", True), ("t3", True)]
    assert calls == [("q", [f"t{i}" for i in range(5)], {"top_n": 2, "instruction": "I"})]


def mock_server(results: Callable[[int], list[dict[str, Any]]]) -> httpx.MockTransport:
    """A vLLM-like server: version, models, and a rerank answering with ``results(n)``."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"version": "0.11.0"})
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 512}]})
        if path.endswith("rerank"):
            documents = json.loads(request.content)["documents"]
            usage = {"prompt_tokens": 1, "total_tokens": 1}
            return httpx.Response(
                200, json={"model": "m", "results": results(len(documents)), "usage": usage}
            )
        return httpx.Response(404, json={"error": {"message": f"no {path}"}})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_server_returning_fewer_results_loses_no_input(adapter: Adapter) -> None:
    def fewer(n: int) -> list[dict[str, Any]]:
        return [{"index": i, "relevance_score": 1 - i / 10} for i in range(n - 1)]

    client = AsyncRerankClient(
        URL, "m", prompt_mode="raw", truncate=False, transport=mock_server(fewer)
    )
    with pytest.raises(RerankResponseError):
        await run(adapter(client=client), use_async=True)
    assert await run(adapter(client=client, fail_open=True), use_async=True) == [
        (f"t{i}", False) for i in range(5)
    ]
