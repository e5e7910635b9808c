"""Client behaviour a real server cannot be made to show on demand: MockTransport only."""

from __future__ import annotations

import asyncio
import json
import pickle

import httpx
import pytest
from support.fake_server import BASE, fake_server, posts

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConfig,
    RerankConfigError,
    RerankConnectionError,
    RerankInputError,
    RerankResponseError,
    RerankStatusError,
    RerankTimeoutError,
)
from rerank_plugins._engine import http, routes, wire
from rerank_plugins.types import PreparedCall, RerankItem

# --- configuration -------------------------------------------------------------------------


def test_missing_base_url_names_argument_and_env(monkeypatch):
    monkeypatch.delenv("RERANK_BASE_URL", raising=False)
    with pytest.raises(RerankConfigError, match=r"base_url=.*RERANK_BASE_URL"):
        AsyncRerankClient()


def test_arguments_beat_env_and_env_beats_defaults(monkeypatch):
    monkeypatch.setenv("RERANK_BASE_URL", "http://env:1")
    monkeypatch.setenv("RERANK_MODEL", "env-model")
    monkeypatch.setenv("RERANK_PROMPT_MODE", "raw")
    from_env = RerankClient()
    assert (from_env.config.base_url, from_env.config.model) == ("http://env:1", "env-model")
    assert from_env.config.prompt_mode == "raw"
    explicit = RerankClient("http://arg:2/", model="arg-model", prompt_mode="client")
    assert (explicit.config.base_url, explicit.config.model) == ("http://arg:2", "arg-model")
    assert explicit.config.prompt_mode == "client"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"route": "/v3/rerank"}, "route"),
        ({"prompt_mode": "smart"}, "RERANK_PROMPT_MODE"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_invalid_settings_are_named(options, named):
    with pytest.raises(RerankConfigError, match=named):
        RerankConfig(base_url=BASE, **options)


def test_api_key_hidden_from_reprs_and_pickles_back():
    secret = "sk-SENTINEL-0123456789"
    client = AsyncRerankClient(BASE, api_key=secret)
    for text in (
        repr(client),
        str(client),
        repr(client.config),
        str(client.config),
        repr(client.to_sync()),
    ):
        assert secret not in text
    assert "api_key='***'" in repr(client.config)
    restored = pickle.loads(pickle.dumps(client))
    assert restored.config == client.config and restored.config.api_key == secret


# --- input handling ------------------------------------------------------------------------


async def test_empty_documents_make_no_request():
    handler, seen = fake_server()
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    result = await client.rerank("q", [])
    assert result.items == () and seen == []


@pytest.mark.parametrize(
    ("query", "docs", "message"),
    [
        ("", ["a"], "query is empty"),
        (3, ["a"], "query must be a str"),
        ("q", "abc", "documents must be a sequence"),
        ("q", ["a", None], r"documents\[1\] must be a str"),
    ],
)
async def test_bad_input_is_a_typed_error_naming_it(query, docs, message):
    handler, seen = fake_server()
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(RerankInputError, match=message):
        await client.rerank(query, docs)
    assert posts(seen, "/v2/rerank") == []


async def test_client_mode_refuses_already_templated_text():
    handler, seen = fake_server(model="qwen3-reranker-x")
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(RerankInputError, match=r"documents\[1\].*<\|im_end\|>"):
        await client.rerank("q", ["fine", "bad<|im_end|>"])
    assert posts(seen, "/v2/rerank") == []


async def test_documents_are_not_mutated_and_results_map_by_index():
    handler, _ = fake_server(model="qwen3-reranker-x")
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    docs = ["bb", "a", "ccc"]
    result = await client.rerank("q", docs)
    assert docs == ["bb", "a", "ccc"]
    # The echoed text carries the template; the result must carry the caller's text.
    assert [(i.index, i.document) for i in result] == [(2, "ccc"), (0, "bb"), (1, "a")]


# --- batching ------------------------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True])
async def test_batches_merge_globally_with_top_n_and_summed_usage(sync):
    handler, seen = fake_server()
    docs = ["x" * (i % 17) + str(i) for i in range(50)]
    progress = []
    kwargs = dict(max_batch_size=8, max_concurrency=3)
    if sync:
        client = RerankClient(BASE, transport=httpx.MockTransport(handler), **kwargs)
        result = client.rerank("q", docs, top_n=5, on_progress=lambda d, t: progress.append((d, t)))
    else:
        client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler), **kwargs)
        result = await client.rerank(
            "q", docs, top_n=5, on_progress=lambda d, t: progress.append((d, t))
        )
    expected = sorted(range(50), key=lambda i: (-len(docs[i]), i))[:5]
    assert result.indices == expected
    batches = posts(seen, "/v2/rerank")
    assert len(batches) == 7
    assert all(json.loads(r.content)["top_n"] == 5 for r in batches[:6])
    assert result.usage.prompt_tokens == 50
    assert sorted(progress) == [(n, 7) for n in range(1, 8)]
    ids = {r.headers["x-request-id"] for r in batches}
    assert len(ids) == 7 and all(i.startswith(result.request_id) for i in ids)


def test_ties_are_broken_by_original_index():
    items = [
        [RerankItem(3, 0.5, "d"), RerankItem(1, 0.5, "b")],
        [RerankItem(0, 0.5, "a"), RerankItem(2, 0.9, "c")],
    ]
    assert [i.index for i in routes.merge_rankings(items, None)] == [2, 0, 1, 3]


def test_top_n_is_never_sent_as_null():
    call = PreparedCall("q", ("a", "b"), None)
    batch = wire.Batch(0, ("a", "b"))
    assert wire.rerank_payload("m", call, batch, None)["top_n"] == 0
    assert wire.rerank_payload("m", call, batch, 9)["top_n"] == 2


@pytest.mark.parametrize("top_n", [0, -1, 2.5, True])
async def test_bad_top_n_is_refused(top_n):
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(fake_server()[0]))
    with pytest.raises(RerankInputError, match="top_n"):
        await client.rerank("q", ["a"], top_n=top_n)


# --- errors and retries --------------------------------------------------------------------


def flaky(statuses, headers=None):
    """Answer /rerank with the given statuses in turn, then succeed."""
    queue = list(statuses)

    def rerank(request):
        if queue:
            status = queue.pop(0)
            return httpx.Response(
                status, headers=headers or {}, json={"error": {"message": f"status {status}"}}
            )
        return httpx.Response(
            200, json={"model": "m", "results": [{"index": 0, "relevance_score": 0.5}]}
        )

    return rerank


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_are_retried(status):
    handler, seen = fake_server(rerank=flaky([status, status]))
    client = AsyncRerankClient(
        BASE, transport=httpx.MockTransport(handler), max_retries=2, retry_backoff=0.001
    )
    result = await client.rerank("q", ["a"])
    assert result.scores == [0.5]
    assert len(posts(seen, "/v2/rerank")) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_are_not_retried(status):
    handler, seen = fake_server(rerank=flaky([status]))
    client = RerankClient(BASE, transport=httpx.MockTransport(handler), retry_backoff=0.001)
    with pytest.raises(RerankStatusError) as info:
        client.rerank("q", ["a"])
    assert info.value.status_code == status
    assert str(info.value) == f"POST {BASE}/v2/rerank returned {status}: status {status}"
    assert len(posts(seen, "/v2/rerank")) == 1


async def test_gives_up_after_max_retries():
    handler, seen = fake_server(rerank=flaky([503] * 10))
    client = AsyncRerankClient(
        BASE, transport=httpx.MockTransport(handler), max_retries=2, retry_backoff=0.001
    )
    with pytest.raises(RerankStatusError, match="503"):
        await client.rerank("q", ["a"])
    assert len(posts(seen, "/v2/rerank")) == 3


def test_retry_after_is_honoured():
    config = RerankConfig(base_url=BASE, retry_backoff=0.001)
    now = 1_700_000_000.0  # 2023: the HTTP date below is past
    assert http.retry_delay(config, 1, "3", jitter=0.5, now=now) == 3.0
    assert http.retry_delay(config, 1, "Wed, 21 Oct 2015 07:28:00 GMT", jitter=0.5, now=now) == 0.0
    assert http.retry_delay(config, 1, None, jitter=0.0, now=now) == 0.0005
    assert http.retry_delay(config, 1, None, jitter=0.999, now=now) <= 0.001
    slow = config.replace(retry_backoff=1, retry_backoff_max=2)
    assert http.retry_delay(slow, 5, None, jitter=0.999, now=now) <= 2


async def test_retry_after_header_delays_the_retry(monkeypatch):
    waits = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    handler, _ = fake_server(rerank=flaky([429], headers={"Retry-After": "2"}))
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    await client.rerank("q", ["a"])
    assert waits == [2.0]


async def test_connection_errors_are_retried_then_typed():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    client = AsyncRerankClient(
        BASE, transport=httpx.MockTransport(handler), max_retries=3, retry_backoff=0.001
    )
    with pytest.raises(RerankConnectionError) as info:
        await client.rerank("q", ["a"])
    assert not isinstance(info.value, RerankTimeoutError)
    assert f"{BASE}/version" in str(info.value) and "rerank-serve" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(calls) == 4


def test_timeout_is_distinct_from_connection_error():
    def handler(request):
        if request.url.path == "/v2/rerank":
            raise httpx.ReadTimeout("slow", request=request)
        return fake_server()[0](request)

    client = RerankClient(BASE, transport=httpx.MockTransport(handler), max_retries=0)
    with pytest.raises(RerankTimeoutError, match="timed out"):
        client.rerank("q", ["a"])


async def test_deadline_bounds_the_whole_call_with_retries():
    handler, seen = fake_server(rerank=flaky([503] * 100, headers={"Retry-After": "0.2"}))
    client = AsyncRerankClient(
        BASE, transport=httpx.MockTransport(handler), max_retries=100, deadline=0.5
    )
    with pytest.raises(RerankStatusError, match="503"):
        await client.rerank("q", ["a"])
    assert 2 <= len(posts(seen, "/v2/rerank")) <= 4


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"results": "x"}', "no 'results' list"),
        ('{"results": [{"index": 7, "relevance_score": 1}]}', "index = 7"),
        ('{"results": [{"index": 0}]}', "relevance_score"),
    ],
)
async def test_malformed_responses_are_typed(body, match):
    handler, _ = fake_server(rerank=lambda r: httpx.Response(200, text=body))
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(RerankResponseError, match=match):
        await client.rerank("q", ["a"])


def test_both_vllm_error_shapes_are_read():
    nested = json.dumps({"error": {"message": "new shape", "type": "BadRequestError"}})
    flat = json.dumps({"object": "error", "message": "old shape", "type": "invalid"})
    assert http.parse_error_message(nested) == "new shape"
    assert http.parse_error_message(flat) == "old shape"
    assert http.parse_error_message('{"error":"Unauthorized"}') == "Unauthorized"


# --- knowing the server --------------------------------------------------------------------


async def test_old_server_without_instruction_support_refuses_custom_instruction():
    handler, seen = fake_server(version="0.19.1", model="qwen3-reranker-x", templated=True)
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler), prompt_mode="server")
    info = await client.server_info()
    assert info.version == (0, 19, 1) and not info.supports_instruction
    # The default instruction is the template's own: that still works on 0.19.
    await client.rerank("q", ["a"])
    with pytest.raises(RerankInputError, match=r"0\.22"):
        await client.rerank("q", ["a"], instruction="Find code")
    assert len(posts(seen, "/v2/rerank")) == 1


async def test_vllm_09_flat_errors_and_client_mode_fallback():
    def rerank(request):
        return httpx.Response(400, json={"object": "error", "message": "bad thing", "code": 400})

    handler, seen = fake_server(version="0.9.2", model="qwen3-reranker-x", rerank=rerank)
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(RerankStatusError, match="returned 400: bad thing"):
        await client.rerank("q", ["a"], instruction="Find code")
    sent = json.loads(posts(seen, "/v2/rerank")[0].content)
    # Client-side formatting works on any version: the instruction travels inside the prompt.
    assert "instruction" not in sent and "<Instruct>: Find code" in sent["query"]


async def test_server_without_version_route_is_assumed_current():
    base, _ = fake_server()

    def handler(request):
        if request.url.path == "/version":
            return httpx.Response(404, json={"detail": "Not Found"})
        return base(request)

    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    info = await client.server_info()
    assert info.version is None and info.model == "m"
    assert (await client.rerank("q", ["a", "bb"])).indices == [1, 0]


# --- lifecycle -----------------------------------------------------------------------------


def test_one_async_client_serves_two_event_loops_with_one_pool():
    handler, _seen = fake_server()
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    first = asyncio.run(client.rerank("q", ["a", "bb"]))
    http_first = client.debug_view().pools.io_http
    second = asyncio.run(client.rerank("q", ["a", "bb"]))
    assert first.indices == second.indices == [1, 0]
    # The pool lives on the client's own loop, so a caller's closed loop leaves it usable.
    assert http_first is not None and not http_first.is_closed
    assert client.debug_view().pools.io_http is http_first
    client.to_sync().close()
    assert http_first.is_closed


async def test_context_managers_close_their_clients():
    handler, _ = fake_server()
    async with AsyncRerankClient(BASE, transport=httpx.MockTransport(handler)) as client:
        await client.rerank("q", ["a"])
        pools = client.debug_view().pools
        pool = pools.home_http or pools.io_http
    assert pool is not None and pool.is_closed
    with RerankClient(BASE, transport=httpx.MockTransport(handler)) as sync:
        sync.rerank("q", ["a"])
        pool = sync.debug_view().pools.io_http
    assert pool is not None and pool.is_closed


async def test_raw_mode_refuses_an_instruction_it_would_drop():
    handler, seen = fake_server(model="all-MiniLM-L6-v2")
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(RerankInputError, match="prompt_mode is 'raw'"):
        await client.rerank("q", ["a"], instruction="Find code")
    assert posts(seen, "/v2/rerank") == []
    assert len(await client.rerank("q", ["a"])) == 1


# --- how a request leaves ------------------------------------------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["transport", "client.request"])
async def test_both_ways_of_sending_carry_the_same_request(monkeypatch, direct):
    """Straight to the transport, or through AsyncClient.request when httpx lacks the
    transport lookup: the same headers, key and body reach the server, the same answer back."""
    import rerank_plugins._engine.pools as pools

    if not direct:
        monkeypatch.setattr(pools, "_transport_for", lambda client, url: None)
    handler, seen = fake_server()
    client = AsyncRerankClient(BASE, api_key="sk-both-ways", transport=httpx.MockTransport(handler))
    result = await client.rerank("q", ["a", "bb"], request_id="rid-1")
    assert result.indices == [1, 0]
    [sent] = posts(seen, "/v2/rerank")
    assert sent.headers["authorization"] == "Bearer sk-both-ways"
    assert sent.headers["x-request-id"] == "rid-1-0"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["user-agent"].startswith("rerank-plugins/")
    assert json.loads(sent.content)["documents"] == ["a", "bb"]
    assert client.debug_view().pools.io_sends_direct == direct
    await client.aclose()
