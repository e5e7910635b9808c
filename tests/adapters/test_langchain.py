"""LangChain adapter against real vLLM servers: compression retriever, pipeline, callbacks."""

from __future__ import annotations

import copy
import logging
import pickle
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from support.texts import ADAPTER_JSON_DOC as JSON_DOC
from support.texts import ADAPTER_QUERY as QUERY
from support.texts import ADAPTER_TEXTS as TEXTS

from rerank_plugins import AsyncRerankClient, RerankClient, RerankConnectionError
from rerank_plugins.langchain import VLLMRerank
from rerank_plugins.retrieval import BM25Index
from rerank_plugins.serve import free_port

try:  # LangChain 1.x
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline
except ImportError:  # LangChain 0.3 (the lower bound)
    from langchain.retrievers import ContextualCompressionRetriever
    from langchain.retrievers.document_compressors import DocumentCompressorPipeline


class BM25Retriever(BaseRetriever):
    """The first stage: the package's own BM25 behind langchain-core's retriever interface, as
    in the README (langchain-community's BM25Retriever is being sunset)."""

    index: BM25Index
    docs: list[Document]
    k: int = 4

    @classmethod
    def from_documents(cls, docs: list[Document], k: int = 4) -> BM25Retriever:
        return cls(index=BM25Index.from_documents([d.page_content for d in docs]), docs=docs, k=k)

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        # The best k by BM25; like langchain-community's BM25Retriever, documents sharing no
        # term with the query fill the remaining places (in corpus order).
        found = [hit.index for hit in self.index.search(query, self.k)]
        rest = [i for i in range(len(self.docs)) if i not in set(found)]
        return [self.docs[i] for i in (found + rest)[: self.k]]


class Events(BaseCallbackHandler):
    """Records the custom events a run's handlers receive."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, UUID]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append((name, data, run_id))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.seen]


PAIR = ["rerank_start", "rerank_end"]


def make_docs() -> list[Document]:
    return [
        Document(page_content=t, id=f"d{i}", metadata={"source": f"s{i}", "tags": ["x"]})
        for i, t in enumerate(TEXTS)
    ]


def closed_client() -> AsyncRerankClient:
    return AsyncRerankClient(f"http://127.0.0.1:{free_port()}", "m", max_retries=0)


@pytest.fixture
def client(minilm_server: Any) -> AsyncRerankClient:
    return AsyncRerankClient(minilm_server.base_url, minilm_server.model_name)


@pytest.fixture
def expected(client: AsyncRerankClient) -> dict[int, float]:
    return {i.index: i.score for i in client.to_sync().rerank(QUERY, TEXTS).items}


def retriever(compressor: Any) -> ContextualCompressionRetriever:
    bm25 = BM25Retriever.from_documents(make_docs(), k=4)
    return ContextualCompressionRetriever(base_compressor=compressor, base_retriever=bm25)


def check_ranked(docs: list[Document], expected: dict[int, float]) -> None:
    """Order, scores, ids and metadata of reranked copies of the corpus' documents."""
    positions = [int(d.id[1:]) for d in docs]  # type: ignore[index]
    assert positions[0] == JSON_DOC
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == pytest.approx([expected[p] for p in positions], abs=1e-5)
    assert scores == sorted(scores, reverse=True)
    assert [d.metadata["rerank_rank"] for d in docs] == list(range(1, len(docs) + 1))
    assert all(d.page_content == TEXTS[p] for d, p in zip(docs, positions, strict=True))
    assert all(d.metadata["source"] == f"s{p}" for d, p in zip(docs, positions, strict=True))
    assert all(d.metadata["reranked"] is True for d in docs)


def test_retriever_invoke(client: AsyncRerankClient, expected: dict[int, float]) -> None:
    events = Events()
    docs = retriever(VLLMRerank(client=client, top_n=3)).invoke(
        QUERY, config={"callbacks": [events]}
    )
    assert len(docs) == 3
    check_ranked(docs, expected)
    assert events.names() == PAIR
    (_, start, run_a), (_, end, run_b) = events.seen
    assert run_a == run_b
    assert start["documents"] == 4 and start["top_n"] == 3
    assert end == {"documents": 3, "reranked": True, "error": None}


async def test_retriever_ainvoke_never_touches_sync_client(
    client: AsyncRerankClient, expected: dict[int, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sync(self: AsyncRerankClient) -> RerankClient:
        raise AssertionError("async path built the sync client")

    monkeypatch.setattr(AsyncRerankClient, "to_sync", no_sync)
    reranker = VLLMRerank(client=client, top_n=2)
    events = Events()
    docs = await retriever(reranker).ainvoke(QUERY, config={"callbacks": [events]})
    check_ranked(docs, expected)
    assert len(docs) == 2
    assert reranker._sync_client is None
    assert events.names() == PAIR


async def test_pipeline_sync_and_async(client: AsyncRerankClient, expected: dict[int, float]):
    pipeline = DocumentCompressorPipeline(
        transformers=[VLLMRerank(client=client, top_n=3), VLLMRerank(client=client, top_n=2)]
    )
    events = Events()
    docs = retriever(pipeline).invoke(QUERY, config={"callbacks": [events]})
    assert [d.id for d in docs] == [
        d.id for d in sorted(docs, key=lambda d: -expected[int(d.id[1:])])
    ]
    assert docs[0].id == f"d{JSON_DOC}" and len(docs) == 2
    # The second stage saw the first stage's copies: positions refer to its own input.
    assert docs[0].metadata["original_index"] == 0
    assert events.names() == PAIR * 2
    docs = await retriever(pipeline).ainvoke(QUERY, config={"callbacks": [events]})
    assert docs[0].id == f"d{JSON_DOC}" and len(docs) == 2
    assert events.names() == PAIR * 4


def test_compress_does_not_mutate(client: AsyncRerankClient, expected: dict[int, float]) -> None:
    docs = make_docs()
    before = copy.deepcopy(docs)
    out = list(VLLMRerank(client=client).compress_documents(docs, QUERY))
    check_ranked(out, expected)
    assert docs == before and all("relevance_score" not in d.metadata for d in docs)
    assert all(d.metadata["original_index"] == int(d.id[1:]) for d in out)  # type: ignore[index]
    out[0].metadata["tags"].append("changed")  # nested values are copies too
    assert docs == before


def test_text_builder(client: AsyncRerankClient) -> None:
    sync = client.to_sync()
    docs = make_docs()

    def scores_for(texts: list[str]) -> list[float]:
        by_index = {i.index: i.score for i in sync.rerank(QUERY, texts).items}
        return [by_index[i] for i in range(len(texts))]

    def got(reranker: VLLMRerank) -> list[float]:
        by_id = {
            d.id: d.metadata["relevance_score"] for d in reranker.compress_documents(docs, QUERY)
        }
        return [by_id[f"d{i}"] for i in range(len(TEXTS))]

    assert got(VLLMRerank(client=client)) == pytest.approx(scores_for(TEXTS), abs=1e-5)
    with_meta = VLLMRerank(client=client, metadata_keys=("source", "missing"))
    texts = [f"source: s{i}\n\n{t}" for i, t in enumerate(TEXTS)]
    assert got(with_meta) == pytest.approx(scores_for(texts), abs=1e-5)
    upper = VLLMRerank(client=client, text_fn=lambda d: d.page_content.upper())
    assert got(upper) == pytest.approx(scores_for([t.upper() for t in TEXTS]), abs=1e-5)


def test_threshold_and_min_keep(client: AsyncRerankClient, expected: dict[int, float]) -> None:
    cut = sorted(expected.values(), reverse=True)[1] + 1e-3
    out = VLLMRerank(client=client, score_threshold=cut).compress_documents(make_docs(), QUERY)
    assert [d.id for d in out] == [f"d{JSON_DOC}"]
    out = VLLMRerank(client=client, score_threshold=2.0, min_keep=0).compress_documents(
        make_docs(), QUERY
    )
    assert list(out) == []


async def test_empty_input_no_request() -> None:
    reranker = VLLMRerank(client=closed_client())
    assert list(reranker.compress_documents([], QUERY)) == []
    assert list(await reranker.acompress_documents([], QUERY)) == []


@pytest.mark.parametrize("use_async", [False, True])
async def test_errors_raise_typed_with_one_event_pair(use_async: bool) -> None:
    events = Events()
    bound = retriever(VLLMRerank(client=closed_client()))
    with pytest.raises(RerankConnectionError):
        if use_async:
            await bound.ainvoke(QUERY, config={"callbacks": [events]})
        else:
            bound.invoke(QUERY, config={"callbacks": [events]})
    assert events.names() == PAIR
    assert "RerankConnectionError" in events.seen[1][1]["error"]


@pytest.mark.parametrize("use_async", [False, True])
async def test_fail_open(use_async: bool, caplog: pytest.LogCaptureFixture) -> None:
    docs = make_docs()
    before = copy.deepcopy(docs)
    reranker = VLLMRerank(client=closed_client(), top_n=3, fail_open=True)
    events = Events()
    bm25_order = [d.id for d in BM25Retriever.from_documents(docs, k=4).invoke(QUERY)]
    with caplog.at_level(logging.WARNING, logger="rerank_plugins"):
        if use_async:
            out = await retriever(reranker).ainvoke(QUERY, config={"callbacks": [events]})
        else:
            out = retriever(reranker).invoke(QUERY, config={"callbacks": [events]})
    assert [d.id for d in out] == bm25_order[:3]
    assert all(d.metadata["reranked"] is False and "relevance_score" not in d.metadata for d in out)
    assert docs == before
    assert "failing open" in caplog.text
    assert events.names() == PAIR and events.seen[1][1]["reranked"] is False


def test_instruction_per_adapter_and_per_call(tiny_server: Any) -> None:
    client = AsyncRerankClient(tiny_server.base_url, tiny_server.model_name)
    sync = client.to_sync()
    other = "Given a question, find the passage in a cookbook that answers it"
    base = VLLMRerank(client=client)

    def scores(docs: Any) -> list[float]:
        return [d.metadata["relevance_score"] for d in docs]

    default = sync.rerank(QUERY, TEXTS).scores
    custom = sync.rerank(QUERY, TEXTS, instruction=other).scores
    assert default != pytest.approx(custom)
    assert scores(base.compress_documents(make_docs(), QUERY)) == pytest.approx(default, abs=1e-5)
    per_call = base.compress_documents(make_docs(), QUERY, instruction=other)
    assert scores(per_call) == pytest.approx(custom, abs=1e-5)
    copied = base.with_instruction(other).compress_documents(make_docs(), QUERY)
    assert scores(copied) == pytest.approx(custom, abs=1e-5)
    assert base.instruction is None


async def test_one_client_shared_with_llamaindex(client: AsyncRerankClient) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.llamaindex import VLLMRerank as NodeRerank

    chain = VLLMRerank(client=client, top_n=1)
    nodes = NodeRerank(client=client, top_n=1)
    assert chain.client is nodes.client
    docs = await chain.acompress_documents(make_docs(), QUERY)
    ranked = await nodes.apostprocess_nodes(
        [NodeWithScore(node=TextNode(text=t, id_=f"d{i}")) for i, t in enumerate(TEXTS)],
        query_str=QUERY,
    )
    assert docs[0].id == ranked[0].node.node_id == f"d{JSON_DOC}"


def test_repr_dump_and_pickle_hide_api_key(minilm_server: Any) -> None:
    reranker = VLLMRerank(
        base_url=minilm_server.base_url,
        model=minilm_server.model_name,
        api_key="s3cret",
        max_batch_size=2,  # four documents go out in two batches
    )
    assert "s3cret" not in repr(reranker) and "s3cret" not in str(reranker.model_dump())
    assert reranker.client.config.api_key == "s3cret"
    assert reranker.model_dump()["max_batch_size"] == 2
    assert reranker.compress_documents(make_docs(), QUERY)[0].id == f"d{JSON_DOC}"
    unpickled = pickle.loads(pickle.dumps(reranker))
    assert unpickled.client.config.max_batch_size == 2
    assert unpickled.compress_documents(make_docs(), QUERY)[0].id == f"d{JSON_DOC}"
    rebuilt = VLLMRerank(**reranker.model_dump())
    assert rebuilt.client.config.max_batch_size == 2 and rebuilt.client.config.api_key is None
