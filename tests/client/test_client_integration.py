"""The client against real vLLM servers started by the test session."""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest
from support.servers import SENTINEL_API_KEY, run_reference

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConnectionError,
    RerankStatusError,
)
from rerank_plugins._engine.http import status_error
from rerank_plugins.prompts import QWEN3_SUFFIX
from rerank_plugins.serve import free_port

pytestmark = pytest.mark.integration

JSON_QUERY = "how do I read a JSON file in Python"
JSON_DOCS = [
    "Cooking pasta: boil salted water, add the pasta and cook for nine minutes.",
    "Use Python's csv module: csv.reader(open('data.csv')) yields each row as a list.",
    "In Python, json.load(f) parses a JSON file opened with open('data.json') into a dict.",
    "Jackson's ObjectMapper reads JSON into Java objects with readValue().",
]


def words(n: int, seed: int = 0) -> str:
    vocab = [
        "python",
        "json",
        "parse",
        "file",
        "data",
        "model",
        "read",
        "write",
        "search",
        "query",
        "answer",
        "index",
    ]
    return " ".join(vocab[(i * 7 + seed) % len(vocab)] for i in range(n))


# --- ranking and routes --------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/rerank", "/v1/rerank", "/v2/rerank"])
async def test_minilm_ranks_the_json_document_first_on_every_route(minilm_server, route):
    async with AsyncRerankClient(
        minilm_server.base_url, model=minilm_server.model_name, route=route
    ) as client:
        result = await client.rerank(JSON_QUERY, JSON_DOCS)
    assert result.indices[0] == 2
    assert result.items[0].document == JSON_DOCS[2]
    assert result.indices[-1] == 0  # cooking is the least related
    assert result.model == minilm_server.model_name
    assert result.usage.prompt_tokens > 0


def test_sync_client_matches_async_and_score_matches_rerank(minilm_server):
    with RerankClient(minilm_server.base_url, model=minilm_server.model_name) as client:
        ranked = client.rerank(JSON_QUERY, JSON_DOCS, top_n=2)
        scored = client.score(JSON_QUERY, JSON_DOCS)
    async_ranked = asyncio.run(
        AsyncRerankClient(minilm_server.base_url).rerank(JSON_QUERY, JSON_DOCS, top_n=2)
    )
    assert len(ranked) == 2 and ranked.indices == async_ranked.indices
    for item in ranked:
        assert scored.scores[item.index] == pytest.approx(item.score, abs=1e-6)


def test_minilm_scores_equal_the_reference_computation(minilm_server):
    scores = RerankClient(minilm_server.base_url).score(JSON_QUERY, JSON_DOCS).scores
    ref = run_reference(
        {
            "model": str(minilm_server.model_path),
            "kind": "minilm",
            "pairs": [[JSON_QUERY, d] for d in JSON_DOCS],
            "max_length": 256,
        }
    )["scores"]
    assert scores == pytest.approx(ref, abs=1e-4)


# --- Qwen3-Reranker prompt modes -----------------------------------------------------------


INSTRUCTION = "Given a question about software, find the passage with working code"


async def _assert_official_prompt_scores(server, instruction, **client_options):
    """The server's scores through the client equal the reference's with the official prompt."""
    client = AsyncRerankClient(server.base_url, model=server.model_name, **client_options)
    result = await client.rerank(JSON_QUERY, JSON_DOCS, instruction=instruction)
    ref = run_reference(
        {
            "model": str(server.model_path),
            "kind": "qwen3",
            "format": "official",
            "instruction": instruction,
            "pairs": [[JSON_QUERY, d] for d in JSON_DOCS],
        }
    )["scores"]
    assert {i.index: i.score for i in result} == pytest.approx(dict(enumerate(ref)), abs=1e-4)


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
async def test_client_mode_scores_equal_the_official_prompt(tiny_server, instruction):
    await _assert_official_prompt_scores(tiny_server, instruction)


async def test_instruction_changes_the_score(tiny_server):
    client = AsyncRerankClient(tiny_server.base_url, model=tiny_server.model_name)
    default = await client.score(JSON_QUERY, JSON_DOCS)
    custom = await client.score(JSON_QUERY, JSON_DOCS, instruction=INSTRUCTION)
    assert max(abs(a - b) for a, b in zip(default.scores, custom.scores, strict=True)) > 1e-6


async def test_server_mode_scores_equal_the_official_prompt(tiny_server_template):
    server = tiny_server_template
    await _assert_official_prompt_scores(
        server, INSTRUCTION, api_key=server.api_key, prompt_mode="server"
    )


# --- long documents ------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_server", "tiny_server_template", "minilm_server"])
async def test_a_document_ten_times_the_window_is_truncated_keeping_the_prompt(request, fixture):
    server = request.getfixturevalue(fixture)
    mode = {"tiny_server": "client", "tiny_server_template": "server"}.get(fixture, "raw")
    client = AsyncRerankClient(
        server.base_url, model=server.model_name, api_key=server.api_key, prompt_mode=mode
    )
    info = await client.server_info()
    long_doc = words(10 * info.max_model_len)
    docs = ["json.load reads a JSON file", long_doc]
    result = await client.rerank(JSON_QUERY, docs)
    assert sorted(result.indices) == [0, 1]
    assert result.items[result.indices.index(1)].document == long_doc  # caller's text back
    sent = await client.render(JSON_QUERY, docs)
    score = {i.index: i.score for i in result}[1]
    if mode == "client":
        assert sent.documents[1].endswith(QWEN3_SUFFIX)
        ref = run_reference(
            {
                "model": str(server.model_path),
                "kind": "qwen3",
                "format": "raw",
                "pairs": [[sent.query, sent.documents[1]]],
            }
        )
    elif mode == "server":
        cut = sent.documents[1]  # the raw document the server's template wraps
        assert long_doc.startswith(cut.rstrip("\ufffd")) and len(cut) < len(long_doc)
        ref = run_reference(
            {
                "model": str(server.model_path),
                "kind": "qwen3",
                "format": "official",
                "pairs": [[JSON_QUERY, cut]],
            }
        )
    else:
        ref = run_reference(
            {
                "model": str(server.model_path),
                "kind": "minilm",
                "max_length": 256,
                "pairs": [[JSON_QUERY, sent.documents[1]]],
            }
        )
    assert len(sent.documents[1]) < len(long_doc)
    assert max(ref["num_tokens"]) <= info.max_model_len
    assert score == pytest.approx(ref["scores"][0], abs=1e-4)


async def test_without_truncation_one_long_document_fails_the_request(tiny_server):
    client = AsyncRerankClient(tiny_server.base_url, model=tiny_server.model_name, truncate=False)
    with pytest.raises(RerankStatusError) as info:
        await client.rerank(JSON_QUERY, ["short", words(5000)])
    assert info.value.status_code == 400
    assert "maximum context length" in info.value.server_message


# --- knowing the server --------------------------------------------------------------------


async def test_server_version_and_window_are_detected(tiny_server, minilm_server):
    tiny = await AsyncRerankClient(tiny_server.base_url).server_info()
    minilm = await AsyncRerankClient(minilm_server.base_url).server_info()
    assert tiny.version[:2] == (0, 32) and tiny.supports_instruction
    assert tiny.max_model_len == 512 and minilm.max_model_len == 256
    assert tiny.model == tiny_server.model_name  # discovered when no model is configured


# --- errors from a real server -------------------------------------------------------------


async def test_wrong_model_is_a_404_with_the_servers_message(minilm_server):
    client = AsyncRerankClient(minilm_server.base_url, model="no-such-model")
    with pytest.raises(RerankStatusError) as info:
        await client.rerank(JSON_QUERY, JSON_DOCS)
    assert info.value.status_code == 404
    assert "no-such-model" in info.value.server_message
    assert str(info.value).startswith(f"POST {minilm_server.base_url}/v2/rerank returned 404: ")


def test_empty_list_error_of_the_server_is_read(minilm_server):
    # The client never sends an empty list (it answers it itself); the server's own answer
    # to one must still become a readable error.
    response = httpx.post(
        f"{minilm_server.base_url}/rerank",
        json={"model": minilm_server.model_name, "query": "q", "documents": []},
    )
    error = status_error("POST", str(response.url), response.status_code, response.text)
    assert error.status_code == 400
    assert "at least one" in error.server_message.lower()
    assert RerankClient(minilm_server.base_url).rerank("q", []).items == ()


def test_no_server_is_a_connection_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    client = RerankClient(url, max_retries=1, retry_backoff=0.01)
    with pytest.raises(RerankConnectionError, match="rerank-serve") as info:
        client.rerank("q", ["a"])
    assert url in str(info.value)


# --- auth, secrets and request ids ---------------------------------------------------------


def test_api_key_guards_v1_rerank_and_never_leaks(tiny_server_template, caplog):
    server = tiny_server_template
    caplog.set_level(logging.DEBUG)  # root: httpx and httpcore included
    for name in ("httpx", "httpcore", "rerank_plugins"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    common = dict(model=server.model_name, route="/v1/rerank", prompt_mode="server")
    errors = []
    for key in (None, "sk-wrong-key"):
        with pytest.raises(RerankStatusError) as info:
            RerankClient(server.base_url, api_key=key, **common).rerank("q", ["a"])
        assert info.value.status_code == 401
        errors.append(info.value)
    client = RerankClient(server.base_url, api_key=SENTINEL_API_KEY, **common)
    assert len(client.rerank("q", ["a", "b"])) == 2
    texts = [caplog.text, repr(client), str(client), repr(client.config), str(client.config)]
    texts += [str(e) + repr(e) + str(e.__dict__) for e in errors]
    assert caplog.records, "DEBUG logging produced nothing: the check would be empty"
    for text in texts:
        assert SENTINEL_API_KEY not in text


def test_request_id_is_sent_and_echoed(tiny_server_template):
    server = tiny_server_template
    echoed = []

    async def on_response(response: httpx.Response) -> None:
        if "x-request-id" in response.request.headers:  # the probe carries none
            echoed.append(
                (response.request.headers["x-request-id"], response.headers.get("x-request-id"))
            )

    http = httpx.AsyncClient(event_hooks={"response": [on_response]})
    client = RerankClient(
        server.base_url,
        model=server.model_name,
        api_key=server.api_key,
        prompt_mode="server",
        http_client=http,
    )
    result = client.rerank("q", ["a", "b"], request_id="req-abc123")
    assert result.request_id == "req-abc123"
    assert echoed == [("req-abc123-0", "req-abc123-0")]


# --- batching and concurrency --------------------------------------------------------------


class InFlight:
    """Counts requests in flight through a real transport."""

    def __init__(self) -> None:
        self.now = self.peak = self.total = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


class CountingAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, counter: InFlight) -> None:
        super().__init__()
        self.counter = counter

    async def handle_async_request(self, request):
        # Batches carry a request id; the one-off probe and server reads do not.
        if request.url.path != "/v2/rerank" or "x-request-id" not in request.headers:
            return await super().handle_async_request(request)
        self.counter.enter()
        try:
            response = await super().handle_async_request(request)
            await response.aread()
            return response
        finally:
            self.counter.leave()


@pytest.mark.parametrize("sync", [False, True])
async def test_batches_are_in_flight_together_and_bounded(tiny_server, sync):
    counter = InFlight()
    docs = [words(30, seed=i) for i in range(200)]
    progress = []
    options = dict(model=tiny_server.model_name, max_batch_size=10, max_concurrency=3)
    if sync:
        client = RerankClient(
            tiny_server.base_url, transport=CountingAsyncTransport(counter), **options
        )
        result = client.rerank("q", docs, top_n=7, on_progress=lambda *p: progress.append(p))
    else:
        client = AsyncRerankClient(
            tiny_server.base_url, transport=CountingAsyncTransport(counter), **options
        )
        result = await client.rerank("q", docs, top_n=7, on_progress=lambda *p: progress.append(p))
    assert counter.total == 20
    assert 1 < counter.peak <= 3
    assert len(result) == 7
    assert progress[-1] == (20, 20) and len(progress) == 20


async def test_batched_and_unbatched_rankings_of_1000_documents_agree(tiny_server):
    docs = [words(12 + i % 9, seed=i) for i in range(1000)]
    one = AsyncRerankClient(tiny_server.base_url, max_batch_size=None)
    many = AsyncRerankClient(tiny_server.base_url, max_batch_size=64, max_concurrency=4)
    whole, batched = await one.rerank("q", docs), await many.rerank("q", docs)
    assert len(whole) == len(batched) == 1000
    assert whole.usage.prompt_tokens == batched.usage.prompt_tokens
    by_index = {i.index: i.score for i in whole}
    for item in batched:
        assert item.score == pytest.approx(by_index[item.index], abs=1e-6)
    # Order: score descending, ties broken by original index, in both.
    for ranking in (whole, batched):
        keys = [(-i.score, i.index) for i in ranking]
        assert keys == sorted(keys)


# --- lifecycle -----------------------------------------------------------------------------


async def test_sync_client_works_inside_a_running_event_loop(minilm_server):
    asyncio.get_running_loop()  # this test body runs inside the loop
    result = RerankClient(minilm_server.base_url).rerank(JSON_QUERY, JSON_DOCS)
    assert result.indices[0] == 2


def test_one_async_client_across_two_asyncio_run_loops(minilm_server):
    client = AsyncRerankClient(minilm_server.base_url)
    first = asyncio.run(client.rerank(JSON_QUERY, JSON_DOCS))
    second = asyncio.run(client.rerank(JSON_QUERY, JSON_DOCS))
    assert first.indices == second.indices and first.indices[0] == 2
