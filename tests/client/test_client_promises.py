"""Promises of the client that need faults on demand: detection, deadlines, requests, pools.

A MockTransport stands in for the server only where a real one cannot be made to answer
this way (a templated probe on a fake model, a stall at an exact route, a count of requests).
The same promises against real servers are in test_prompt_matrix.py and test_reliability*.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx
import pytest
from support.fake_server import BASE, fake_server, is_probe, posts

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConfig,
    RerankConfigError,
    RerankInputError,
    RerankTimeoutError,
)
from rerank_plugins._engine import discovery, http

# --- prompt detection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt_tokens", "templated", "added"),
    [(2, False, 0), (5, False, 3), (6, False, 4), (72, True, 70), (None, None, None)],
)
def test_probe_reading(prompt_tokens, templated, added):
    detection = discovery.read_probe(prompt_tokens, "/v2/rerank")
    assert detection.formats_prompt is templated and detection.added_tokens == added


TEMPLATED = discovery.read_probe(70, "/v2/rerank")
PLAIN = discovery.read_probe(2, "/v2/rerank")
SILENT = discovery.read_probe(None, "/v2/rerank")


@pytest.mark.parametrize(
    ("requested", "detection", "qwen3", "expected"),
    [
        ("auto", TEMPLATED, True, "server"),
        ("auto", TEMPLATED, False, "server"),  # e.g. a Sentence-Transformers v6 checkpoint
        ("auto", PLAIN, True, "client"),
        ("auto", PLAIN, False, "raw"),
        ("auto", SILENT, True, "client"),  # no signal: the name rule
        ("auto", SILENT, False, "raw"),
        ("server", TEMPLATED, True, "server"),
        ("client", PLAIN, True, "client"),
        ("raw", PLAIN, False, "raw"),
        ("client", SILENT, True, "client"),
        ("server", SILENT, True, "server"),
        ("client", TEMPLATED, True, RerankConfigError),
        ("raw", TEMPLATED, True, RerankConfigError),
        ("server", PLAIN, True, RerankConfigError),
        ("server", PLAIN, False, RerankConfigError),
    ],
)
def test_mode_resolution(requested, detection, qwen3, expected):
    if expected is RerankConfigError:
        with pytest.raises(RerankConfigError, match="contradicts the server") as info:
            discovery.resolve_mode(requested, detection, qwen3, BASE)
        assert "prompt tokens" in str(info.value) and "prompt_mode=" in str(info.value)
    else:
        assert discovery.resolve_mode(requested, detection, qwen3, BASE)[0] == expected


async def test_auto_sends_plain_text_to_a_templating_server_and_says_why():
    handler, seen = fake_server(model="qwen3-reranker-x", templated=True)
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    await client.rerank("what is json", ["json is a format"], instruction="Find docs")
    sent = json.loads(posts(seen, "/v2/rerank")[0].content)
    assert sent["query"] == "what is json" and sent["documents"] == ["json is a format"]
    assert sent["instruction"] == "Find docs"
    info = await client.server_info()
    assert info.formats_prompt is True and info.prompt_mode == "server"
    assert "62 prompt tokens" in info.prompt_detection
    rendered = await client.render("q", ["d"])
    assert rendered.mode == "server" and rendered.documents == ("d",)


async def test_explicit_client_mode_against_a_templating_server_is_a_config_error():
    handler, seen = fake_server(model="qwen3-reranker-x", templated=True)
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler), prompt_mode="client")
    with pytest.raises(RerankConfigError, match="wrap the prompt a second time"):
        await client.rerank("q", ["d"])
    assert posts(seen, "/v2/rerank") == []


async def test_no_usage_falls_back_to_the_name_rule_and_logs_it_once(caplog):
    def handler(request):
        if is_probe(request):  # a gateway that rewrites replies without usage
            return httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 1.0}]})
        return fake_server(model="qwen3-reranker-x")[0](request)

    caplog.set_level(logging.WARNING, "rerank_plugins")
    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    for _ in range(3):
        await client.rerank("q", ["d"])
    info = await client.server_info()
    assert info.formats_prompt is None and info.prompt_mode == "client"
    warnings = [r for r in caplog.records if "model-name rule" in r.getMessage()]
    assert len(warnings) == 1


# --- no request that is not needed -----------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True])
async def test_documents_that_fit_cost_one_request_per_batch_and_no_tokenize(sync):
    handler, seen = fake_server(model="qwen3-reranker-x", max_model_len=512)
    make = RerankClient if sync else AsyncRerankClient
    client = make(BASE, transport=httpx.MockTransport(handler), max_batch_size=4)
    docs = [f"short document {i}" for i in range(10)]
    for _ in range(3):
        result = client.rerank("q", docs) if sync else await client.rerank("q", docs)
        assert sorted(result.indices) == list(range(10))
    paths = [r.url.path for r in seen if not is_probe(r)]
    # Once per client: /version, /v1/models, the probe and (client-side formatting only) a
    # check that the tokenizer has Qwen's chat markers; then exactly 3 batches per call.
    assert paths == ["/version", "/v1/models", "/tokenize"] + ["/v2/rerank"] * 9


async def test_only_documents_that_may_overflow_are_tokenized():
    tokenized = []

    def handler(request):
        if request.url.path == "/tokenize":
            text = json.loads(request.content)["prompt"]
            tokenized.append(text)
            return httpx.Response(200, json={"tokens": list(range(len(text.split())))})
        if request.url.path == "/detokenize":
            tokens = json.loads(request.content)["tokens"]
            return httpx.Response(200, json={"prompt": "word " * len(tokens)})
        return fake_server(model="m", max_model_len=64)[0](request)

    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler))
    long_doc = "word " * 100
    result = await client.rerank("q", ["short", long_doc])
    assert sorted(result.indices) == [0, 1]
    # The query side once, then only the long document; "short" fits by its byte length.
    assert tokenized == ["q", long_doc]
    # 64 tokens of window, 0 added by the server, 4 of margin, 1 for the query.
    assert (await client.render("q", ["short", long_doc])).documents[1] == "word " * 59


# --- deadline ----------------------------------------------------------------------------------


# Seconds a call may run past its deadline: scheduling on a loaded 2-core machine (and a sync
# client's start). The stalls below last 30 s, so a client that ignored its deadline still
# fails the bound; what proves the mechanism is the handler seeing its request cancelled.
GRACE = 3.0


def stalling(path, cancelled):
    """A fake server that answers ``path`` after 30 s; ``cancelled`` is set if it is dropped."""

    async def handler(request):
        if request.url.path == path:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()  # a threading.Event: the sync client's loop is another thread
                raise
        return fake_server()[0](request)

    return handler


@pytest.mark.parametrize("path", ["/version", "/v1/models", "/v2/rerank"])
@pytest.mark.parametrize("sync", [False, True])
async def test_deadline_bounds_every_request_of_a_call(path, sync):
    cancelled = threading.Event()
    make = RerankClient if sync else AsyncRerankClient
    transport = httpx.MockTransport(stalling(path, cancelled))
    client = make(BASE, transport=transport, deadline=0.5, timeout=20)
    start = time.monotonic()
    with pytest.raises(RerankTimeoutError, match=rf"deadline of 0.5s passed during \w+ .*{path}$"):
        if sync:
            client.rerank("q", ["a"])
        else:
            await client.rerank("q", ["a"])
    assert time.monotonic() - start < 0.5 + GRACE
    assert cancelled.wait(GRACE), f"the stalled request to {path} was not cancelled"


async def test_a_trickling_body_is_cut_at_the_deadline():
    body = json.dumps({"results": [{"index": 0, "relevance_score": 1.0}]}).encode()
    chunks = [body[i : i + 2] for i in range(0, len(body), 2)]  # 0.1 s apart: about 2.7 s
    sent = []

    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self):
            for chunk in chunks:
                await asyncio.sleep(0.1)
                sent.append(chunk)
                yield chunk

    def handler(request):
        if request.url.path == "/v2/rerank" and not is_probe(request):
            return httpx.Response(200, stream=Trickle())
        return fake_server()[0](request)

    client = AsyncRerankClient(BASE, transport=httpx.MockTransport(handler), deadline=1.0)
    start = time.monotonic()
    with pytest.raises(RerankTimeoutError, match=r"deadline of 1s passed during POST .*/rerank$"):
        await client.rerank("q", ["a"])
    assert time.monotonic() - start < 1.0 + GRACE
    # Cut mid-body: the rest of the trickle was never read.
    assert 0 < len(sent) < len(chunks), f"{len(sent)} of {len(chunks)} chunks read"


def test_retry_after_of_any_form_never_raises_outside_the_tree():
    config = RerankConfig(base_url=BASE, retry_backoff=0.01, retry_backoff_max=0.02)
    for value in ("soon", "", "-5", "nan", "inf", "Wed, 99 Foo 2015 07:28:00 GMT", "1e309"):
        delay = http.retry_delay(config, 1, value, jitter=0.999, now=1_700_000_000.0)
        assert 0 <= delay <= 0.08


# --- input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "docs", "instruction", "match"),
    [
        ("q\ud800", ["a"], None, r"query holds a lone surrogate .* at character 1"),
        ("q", ["a", "b\udfff"], None, r"documents\[1\] holds a lone surrogate"),
        ("q", ["a"], "\ud800", "instruction holds a lone surrogate"),
        ("q", {"a": 1}, None, "got dict"),
        ("q", {"a", "b"}, None, "got set"),
        ("q", b"ab", None, "got bytes"),
        ("q", ["a"], 3, "instruction must be a str"),
    ],
)
def test_input_that_cannot_be_sent_is_refused_before_sending(query, docs, instruction, match):
    handler, seen = fake_server()
    client = RerankClient(BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(RerankInputError, match=match):
        client.rerank(query, docs, instruction=instruction)
    assert seen == []


# --- connections -------------------------------------------------------------------------------


def test_sixteen_threads_first_use_makes_one_pool_and_learns_once():
    handler, seen = fake_server()
    client = RerankClient(BASE, transport=httpx.MockTransport(handler))
    barrier = threading.Barrier(16)
    errors = []

    def work():
        barrier.wait()
        try:
            client.rerank("q", ["a", "bb"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r.url.path for r in seen].count("/version") == 1
    pool = client.debug_view().pools.io_http
    client.close()
    assert pool is not None and pool.is_closed


async def test_the_sync_twin_keeps_transport_and_settings():
    handler, seen = fake_server()
    client = AsyncRerankClient(
        BASE, transport=httpx.MockTransport(handler), verify=False, timeout=7, max_batch_size=3
    )
    twin = client.to_sync()
    assert twin.config == client.config and twin.config.verify is False
    assert twin.rerank("q", ["a", "bb"]).indices == [1, 0]  # through the MockTransport
    assert len(posts(seen, "/v2/rerank")) == 1


async def test_an_api_key_on_an_unguarded_route_is_reported(caplog):
    handler, _ = fake_server()  # answers with or without the key
    caplog.set_level(logging.WARNING, "rerank_plugins")
    client = AsyncRerankClient(
        BASE, api_key="sk-test-secret", transport=httpx.MockTransport(handler)
    )
    await client.rerank("q", ["a"])
    info = await client.server_info()
    assert info.auth_enforced is False
    assert any("answered without the API key" in r.getMessage() for r in caplog.records)
    assert "sk-test-secret" not in caplog.text


async def test_a_guarded_route_is_recognised():
    base, _seen = fake_server()

    def handler(request):
        if "authorization" not in request.headers:
            return httpx.Response(401, json={"error": "Unauthorized"})
        return base(request)

    client = AsyncRerankClient(BASE, api_key="sk-test", transport=httpx.MockTransport(handler))
    await client.rerank("q", ["a"])
    assert (await client.server_info()).auth_enforced is True


async def test_a_gateway_without_reads_tokenizer_or_usage_still_works_and_says_so(caplog):
    """A LiteLLM-like gateway: only the rerank route, Cohere-shaped replies (meta, no usage)."""

    def handler(request):
        if request.url.path != "/v2/rerank":
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        results = [
            {"index": i, "relevance_score": float(len(d))} for i, d in enumerate(body["documents"])
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        return httpx.Response(
            200, json={"id": "x", "results": results, "meta": {"billed_units": {"search_units": 1}}}
        )

    caplog.set_level(logging.WARNING, "rerank_plugins")
    client = RerankClient(BASE, model="m", transport=httpx.MockTransport(handler))
    for _ in range(2):
        result = client.rerank("q", ["a", "ccc", "bb"], top_n=2)
        assert result.indices == [1, 2] and result.usage.prompt_tokens == 0
    info = client.server_info()
    assert info.version is None and info.max_model_len is None and info.formats_prompt is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no max_model_len" in m for m in messages) == 1
    assert sum("model-name rule" in m for m in messages) == 1


def test_a_forked_child_gets_a_pool_of_its_own():
    import os

    handler, _ = fake_server()
    client = RerankClient(BASE, transport=httpx.MockTransport(handler))
    assert client.rerank("q", ["a", "bb"]).indices == [1, 0]  # the parent's loop and pool exist
    pid = os.fork()
    if pid == 0:  # the child: the same client object, its own loop thread and pool
        try:
            ok = client.rerank("q", ["a", "bb"]).indices == [1, 0]
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.rerank("q", ["ccc", "a"]).indices == [0, 1]  # the parent is unaffected
    client.close()


@pytest.mark.parametrize(
    ("model", "listwise", "expected_requests"),
    [
        ("jinaai/jina-reranker-v3", None, 1),  # the family says listwise: one request
        ("jinaai/jina-reranker-v3", False, 3),  # told otherwise
        ("all-MiniLM-L6-v2", None, 3),
        ("all-MiniLM-L6-v2", True, 1),
    ],
)
def test_a_listwise_model_gets_the_whole_list_in_one_request(model, listwise, expected_requests):
    handler, seen = fake_server(model=model)
    client = RerankClient(
        BASE, transport=httpx.MockTransport(handler), max_batch_size=4, listwise=listwise
    )
    docs = [f"document {i}" + "x" * i for i in range(10)]
    result = client.rerank("q", docs)
    assert sorted(result.indices) == list(range(10))
    assert len(posts(seen, "/v2/rerank")) == expected_requests
    assert client.server_info().listwise is (expected_requests == 1)


# --- documents with images ---------------------------------------------------------------------

PNG_URL = "data:image/png;base64,iVBORw0KGgo="


def test_image_documents_go_as_content_parts_to_a_multimodal_family():
    from rerank_plugins.multimodal import ImageDocument

    handler, seen = fake_server(model="Qwen/Qwen3-VL-Reranker-2B", templated=True)
    client = RerankClient(BASE, transport=httpx.MockTransport(handler))
    docs = ["a text", ImageDocument((PNG_URL,), text="a caption")]
    result = client.rerank("q", docs)
    assert sorted(result.indices) == [0, 1]
    assert result.items[result.indices.index(1)].document is docs[1]  # the caller's object
    sent = json.loads(posts(seen, "/v2/rerank")[0].content)["documents"]
    assert sent[0] == "a text"
    assert sent[1] == {
        "content": [
            {"type": "image_url", "image_url": {"url": PNG_URL}},
            {"type": "text", "text": "a caption"},
        ]
    }


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "Qwen/Qwen3-Reranker-0.6B"])
@pytest.mark.parametrize("configured", [True, False])
def test_images_error_fails_an_image_for_a_text_only_family_before_sending(model, configured):
    from rerank_plugins.multimodal import ImageDocument

    handler, seen = fake_server(model=model, templated=True)
    client = RerankClient(
        BASE,
        model=model if configured else None,
        images="error",
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(RerankInputError, match=r"takes text only|family of .* is unknown"):
        client.rerank("q", ["a", ImageDocument((PNG_URL,))])
    # Configured: nothing at all is sent; else only the one-off reads that name the model.
    assert posts(seen, "/v2/rerank") == []
    assert (
        seen == [] if configured else all(r.url.path != "/v2/rerank" or is_probe(r) for r in seen)
    )


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "Qwen/Qwen3-Reranker-0.6B"])
def test_an_image_document_for_a_text_only_family_goes_as_its_text(model):
    from rerank_plugins.multimodal import ImageDocument

    handler, seen = fake_server(model=model, templated=True)
    client = RerankClient(BASE, model=model, transport=httpx.MockTransport(handler))
    docs = ["a", ImageDocument((PNG_URL,), text="a caption"), ImageDocument((PNG_URL,))]
    result = client.rerank("q", docs)
    assert sorted(result.indices) == [0, 1, 2]
    assert result.items[result.indices.index(1)].document is docs[1]  # the caller's object
    sent = [json.loads(r.content)["documents"] for r in posts(seen, "/v2/rerank")]
    assert [d for d in sent if d != ["b"]] == [["a", "a caption", ""]]  # the probe aside


def test_a_gateway_failing_the_keyless_check_does_not_fail_calls():
    """LiteLLM without prisma answers a request without its key with 500, not 401."""

    def handler(request):
        if request.method == "GET":
            return httpx.Response(404)
        if "authorization" not in request.headers:
            return httpx.Response(500, text="Internal Server Error")
        return httpx.Response(
            200,
            json={
                "id": "x",
                "results": [{"index": 0, "relevance_score": 0.5, "document": {"text": "a"}}],
                "meta": {"billed_units": {"total_tokens": 3}},
            },
        )

    client = RerankClient(
        "http://gw.test", model="m", api_key="sk-1", transport=httpx.MockTransport(handler)
    )
    result = client.rerank("q", ["a"])
    assert result.indices == [0] and result.usage.total_tokens == 3  # Cohere's billed units
    assert client.server_info().auth_enforced is None
