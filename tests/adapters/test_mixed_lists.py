"""Mixed text and image lists on a text-only reranker (the real MiniLM server, no known family).

Each image document goes as its text (caption, alt text, or empty), ranked with the rest and
logged once per client; only ``images="error"`` (or an image query) refuses them.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from rerank_plugins import AsyncRerankClient, RerankClient, RerankInputError
from rerank_plugins.multimodal import ImageDocument

PNG_B64 = "iVBORw0KGgo="
PNG_URL = f"data:image/png;base64,{PNG_B64}"
QUERY = "how do I read a JSON file in Python"
TEXTS = [
    "Cooking pasta: boil salted water, add the pasta and cook for nine minutes.",
    "Jackson's ObjectMapper reads JSON into Java objects with readValue().",
    "The train to the coast leaves at nine from platform four.",
]
CAPTION = "Screenshot: Python's json.load(f) reading a JSON file into a dict."
NOT_SEEN = "images are not seen"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if NOT_SEEN in r.getMessage()]


def test_llamaindex_mixed_nodes_all_come_back_ranked_by_text(
    minilm_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"t{i}"), score=0.5) for i, t in enumerate(TEXTS)
    ]
    nodes.append(
        NodeWithScore(node=ImageNode(image=PNG_B64, text=CAPTION, id_="captioned"), score=0.4)
    )
    nodes.append(NodeWithScore(node=ImageNode(image=PNG_B64, id_="bare"), score=0.3))
    before = [n.node.model_dump() for n in nodes]
    client = AsyncRerankClient(minilm_server.base_url, minilm_server.model_name)
    reranker = VLLMRerank(client=client)
    with caplog.at_level(logging.WARNING, logger="rerank_plugins"):
        out = reranker.postprocess_nodes(nodes, query_str=QUERY)
        again = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert len(out) == 5 and {n.node.node_id for n in out} == {n.node.node_id for n in nodes}
    by_id = {n.node.node_id: n for n in out}
    assert type(by_id["captioned"].node) is ImageNode and type(by_id["bare"].node) is ImageNode
    assert by_id["captioned"].node.image == PNG_B64  # the copies keep their image
    assert [n.node.model_dump() for n in nodes] == before  # the caller's nodes are unchanged
    # Ranked by text: the same scores as the texts alone (the bare image as an empty string).
    plain = client.to_sync().rerank(QUERY, [*TEXTS, CAPTION, ""])
    expected = {["t0", "t1", "t2", "captioned", "bare"][i.index]: i.score for i in plain}
    assert [n.node.node_id for n in out] == sorted(expected, key=lambda k: -expected[k])
    assert [n.score for n in out] == pytest.approx(
        sorted(expected.values(), reverse=True), abs=1e-5
    )
    assert out[0].node.node_id == "captioned"  # its caption is the best answer
    assert [n.node.node_id for n in again] == [n.node.node_id for n in out]
    assert len(log_lines(caplog)) == 1  # one line per client, not per call


async def test_langchain_async_mixed_documents(minilm_server: Any) -> None:
    from langchain_core.documents import Document

    from rerank_plugins.langchain import VLLMRerank

    docs = [Document(page_content=t) for t in TEXTS]
    docs.append(Document(page_content=CAPTION, metadata={"image": PNG_URL}))
    reranker = VLLMRerank(base_url=minilm_server.base_url, model=minilm_server.model_name)
    out = await reranker.acompress_documents(docs, QUERY)
    assert len(out) == 4 and out[0].page_content == CAPTION
    assert out[0].metadata["image"] == PNG_URL and docs[3].metadata == {"image": PNG_URL}


def test_client_keeps_image_documents_in_results_and_errors_on_request(
    minilm_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    image = ImageDocument((PNG_URL,), CAPTION)
    with RerankClient(minilm_server.base_url, minilm_server.model_name) as client:
        with caplog.at_level(logging.WARNING, logger="rerank_plugins"):
            mixed = client.rerank(QUERY, [*TEXTS, image])
        plain = client.rerank(QUERY, [*TEXTS, CAPTION])
    assert mixed.items[0].document is image
    assert mixed.indices == plain.indices
    assert mixed.scores == pytest.approx(plain.scores, abs=1e-5)
    assert len(log_lines(caplog)) == 1 and minilm_server.model_name in log_lines(caplog)[0]
    strict = RerankClient(minilm_server.base_url, minilm_server.model_name, images="error")
    with strict, pytest.raises(RerankInputError, match="images"):
        strict.rerank(QUERY, [*TEXTS, image])
