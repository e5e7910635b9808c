"""LlamaIndex adapter against real vLLM servers: query engines, chat engine, events, fail-open."""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from pydantic import Field
from support.texts import ADAPTER_JSON_DOC as JSON_DOC
from support.texts import ADAPTER_QUERY as QUERY
from support.texts import ADAPTER_TEXTS as TEXTS

from rerank_plugins import AsyncRerankClient, RerankClient, RerankConnectionError
from rerank_plugins.llamaindex import VLLMRerank
from rerank_plugins.serve import free_port


class Recorder(BaseEventHandler):
    """Collects rerank events seen by the root dispatcher."""

    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, ReRankStartEvent | ReRankEndEvent):
            self.events.append(event)

    def pairs(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


class CBRecorder(BaseCallbackHandler):
    """Counts starts and ends of the RERANKING callback event."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.starts = self.ends = 0

    def on_event_start(self, event_type: CBEventType, *args: Any, **kwargs: Any) -> str:
        self.starts += event_type == CBEventType.RERANKING
        return kwargs.get("event_id", "")

    def on_event_end(self, event_type: CBEventType, *args: Any, **kwargs: Any) -> None:
        self.ends += event_type == CBEventType.RERANKING

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, *args: Any, **kwargs: Any) -> None:
        pass


PAIR = ["ReRankStartEvent", "ReRankEndEvent"]


@pytest.fixture
def events() -> Iterator[Recorder]:
    recorder = Recorder()
    root = get_dispatcher()
    root.add_event_handler(recorder)
    try:
        yield recorder
    finally:
        root.event_handlers.remove(recorder)


@pytest.fixture
def client(minilm_server: Any) -> AsyncRerankClient:
    return AsyncRerankClient(minilm_server.base_url, minilm_server.model_name)


@pytest.fixture
def expected(client: AsyncRerankClient) -> dict[int, float]:
    """Scores the client itself gives each text, by position."""
    result = client.to_sync().rerank(QUERY, TEXTS)
    return {item.index: item.score for item in result.items}


def closed_client() -> AsyncRerankClient:
    return AsyncRerankClient(f"http://127.0.0.1:{free_port()}", "m", max_retries=0)


def make_nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"pos": i}), score=1 - i / 10)
        for i, t in enumerate(TEXTS)
    ]


def make_index() -> VectorStoreIndex:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))


def check_ranked(nodes: list[NodeWithScore], expected: dict[int, float]) -> None:
    """Order, scores and metadata of a reranked list of the corpus' nodes."""
    positions = [int(n.node.node_id[1:]) for n in nodes]
    assert positions[0] == JSON_DOC
    assert [n.score for n in nodes] == pytest.approx([expected[p] for p in positions], abs=1e-5)
    assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    assert [n.node.metadata["rerank_rank"] for n in nodes] == list(range(1, len(nodes) + 1))
    assert all(n.node.metadata["reranked"] is True for n in nodes)
    assert all("retrieval_score" in n.node.metadata for n in nodes)
    # The added keys never reach the LLM prompt.
    assert all("rerank_rank" not in n.node.get_content(MetadataMode.LLM) for n in nodes)


def test_query_engine_sync(client: AsyncRerankClient, expected: dict[int, float], events: Recorder):
    reranker = VLLMRerank(client=client, top_n=3)
    engine = make_index().as_query_engine(
        llm=MockLLM(), similarity_top_k=4, node_postprocessors=[reranker]
    )
    response = engine.query(QUERY)
    assert len(response.source_nodes) == 3
    check_ranked(response.source_nodes, expected)
    assert events.pairs() == PAIR


async def test_query_engine_async_never_touches_sync_client(
    client: AsyncRerankClient,
    expected: dict[int, float],
    events: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_sync(self: AsyncRerankClient) -> RerankClient:
        raise AssertionError("async path built the sync client")

    monkeypatch.setattr(AsyncRerankClient, "to_sync", no_sync)
    reranker = VLLMRerank(client=client, top_n=2)
    engine = make_index().as_query_engine(
        llm=MockLLM(), similarity_top_k=4, node_postprocessors=[reranker]
    )
    response = await engine.aquery(QUERY)
    check_ranked(response.source_nodes, expected)
    assert len(response.source_nodes) == 2
    assert reranker._sync_client is None
    assert events.pairs() == PAIR


async def test_async_path_is_spanned(client: AsyncRerankClient) -> None:
    spans = SimpleSpanHandler()
    root = get_dispatcher()
    root.add_span_handler(spans)
    try:
        await VLLMRerank(client=client).apostprocess_nodes(make_nodes(), query_str=QUERY)
    finally:
        root.span_handlers.remove(spans)
    names = [s.id_ for s in spans.completed_spans]
    assert any("VLLMRerank._apostprocess_nodes" in name for name in names)


async def test_chat_engine_sync_and_async(client: AsyncRerankClient, events: Recorder) -> None:
    engine = make_index().as_chat_engine(
        chat_mode="context",
        llm=MockLLM(),
        # The default Memory keeps history in aiosqlite, whose worker thread can outlive the
        # test's event loop; the plain buffer keeps this test about the reranker.
        memory=ChatMemoryBuffer.from_defaults(),
        similarity_top_k=4,
        node_postprocessors=[VLLMRerank(client=client, top_n=2)],
    )
    response = engine.chat(QUERY)
    assert response.source_nodes[0].node.node_id == f"n{JSON_DOC}"
    assert events.pairs() == PAIR
    response = await engine.achat(QUERY)
    assert response.source_nodes[0].node.node_id == f"n{JSON_DOC}"
    assert events.pairs() == PAIR * 2


def test_postprocess_nodes_does_not_mutate(client: AsyncRerankClient, expected: dict[int, float]):
    nodes = make_nodes()
    before = copy.deepcopy(nodes)
    out = VLLMRerank(client=client, metadata_mode=MetadataMode.NONE).postprocess_nodes(
        nodes, query_bundle=QueryBundle(QUERY)
    )
    check_ranked(out, expected)
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    retrieval = {n.node.node_id: n.score for n in nodes}
    assert all(n.node.metadata["retrieval_score"] == retrieval[n.node.node_id] for n in out)
    assert all(n.node.metadata["original_index"] == int(n.node.node_id[1:]) for n in out)
    assert all(n.node.metadata["pos"] == n.node.metadata["original_index"] for n in out)


def test_text_builder_modes(client: AsyncRerankClient) -> None:
    nodes = make_nodes()
    sync = client.to_sync()

    def scores_for(texts: list[str]) -> list[float]:
        by_index = {i.index: i.score for i in sync.rerank(QUERY, texts).items}
        return [by_index[i] for i in range(len(texts))]

    def got(reranker: VLLMRerank) -> list[float]:
        out = reranker.postprocess_nodes(nodes, query_str=QUERY)
        by_id = {n.node.node_id: n.score for n in out}
        return [by_id[f"n{i}"] for i in range(len(TEXTS))]

    embed = [f"pos: {i}\n\n{t}" for i, t in enumerate(TEXTS)]
    assert got(VLLMRerank(client=client)) == pytest.approx(scores_for(embed), abs=1e-5)
    plain = VLLMRerank(client=client, metadata_mode=MetadataMode.NONE)
    assert got(plain) == pytest.approx(scores_for(TEXTS), abs=1e-5)
    upper = VLLMRerank(client=client, text_fn=lambda node: node.get_content().upper())
    assert got(upper) == pytest.approx(scores_for([t.upper() for t in TEXTS]), abs=1e-5)


def test_threshold_and_min_keep(client: AsyncRerankClient, expected: dict[int, float]) -> None:
    cut = sorted(expected.values(), reverse=True)[1] + 1e-3  # only the best passes
    out = VLLMRerank(client=client, score_threshold=cut).postprocess_nodes(
        make_nodes(), query_str=QUERY
    )
    assert [n.node.node_id for n in out] == [f"n{JSON_DOC}"]
    out = VLLMRerank(client=client, score_threshold=2.0, min_keep=2).postprocess_nodes(
        make_nodes(), query_str=QUERY
    )
    assert len(out) == 2 and out[0].node.node_id == f"n{JSON_DOC}"


def test_empty_input_balanced_and_no_request(events: Recorder) -> None:
    callbacks = CBRecorder()
    reranker = VLLMRerank(client=closed_client(), callback_manager=CallbackManager([callbacks]))
    assert reranker.postprocess_nodes([], query_str=QUERY) == []
    assert events.pairs() == PAIR
    assert (callbacks.starts, callbacks.ends) == (1, 1)


async def test_errors_raise_typed_and_stay_balanced(events: Recorder) -> None:
    callbacks = CBRecorder()
    reranker = VLLMRerank(client=closed_client(), callback_manager=CallbackManager([callbacks]))
    with pytest.raises(RerankConnectionError):
        reranker.postprocess_nodes(make_nodes(), query_str=QUERY)
    with pytest.raises(RerankConnectionError):
        await reranker.apostprocess_nodes(make_nodes(), query_str=QUERY)
    with pytest.raises(ValueError, match="needs a query"):
        reranker.postprocess_nodes(make_nodes())
    assert events.pairs() == PAIR * 3
    assert (callbacks.starts, callbacks.ends) == (3, 3)


@pytest.mark.parametrize("use_async", [False, True])
async def test_fail_open(use_async: bool, events: Recorder, caplog: pytest.LogCaptureFixture):
    nodes = make_nodes()
    before = copy.deepcopy(nodes)
    reranker = VLLMRerank(client=closed_client(), top_n=3, fail_open=True)
    with caplog.at_level(logging.WARNING, logger="rerank_plugins"):
        if use_async:
            out = await reranker.apostprocess_nodes(nodes, query_str=QUERY)
        else:
            out = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in out] == ["n0", "n1", "n2"]
    assert [n.score for n in out] == [n.score for n in nodes[:3]]
    assert all(n.node.metadata["reranked"] is False for n in out)
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    assert "failing open" in caplog.text
    assert events.pairs() == PAIR


def test_serialization_hides_api_key(minilm_server: Any) -> None:
    reranker = VLLMRerank(
        base_url=minilm_server.base_url,
        model=minilm_server.model_name,
        api_key="s3cret",
        top_n=2,
        max_batch_size=2,  # client settings reach the client and survive to_dict/from_dict
        timeout=30.0,
    )
    for text in (repr(reranker), str(reranker.to_dict()), reranker.to_json()):
        assert "s3cret" not in text
    assert reranker.to_dict()["class_name"] == "VLLMRerank"
    assert reranker.to_dict()["max_batch_size"] == 2
    rebuilt = VLLMRerank.from_dict(reranker.to_dict())
    assert (rebuilt.base_url, rebuilt.model, rebuilt.top_n) == (
        reranker.base_url,
        minilm_server.model_name,
        2,
    )
    assert (rebuilt.client.config.max_batch_size, rebuilt.client.config.timeout) == (2, 30.0)
    assert rebuilt.client.config.api_key is None  # the key is never serialized
    out = rebuilt.postprocess_nodes(make_nodes(), query_str=QUERY)  # four documents, two batches
    assert out[0].node.node_id == f"n{JSON_DOC}"
    reranker.postprocess_nodes(make_nodes(), query_str=QUERY)  # makes the sync twin
    unpickled = pickle.loads(pickle.dumps(reranker))
    out = unpickled.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert out[0].node.node_id == f"n{JSON_DOC}"


def test_instruction_per_adapter_and_per_copy(tiny_server: Any) -> None:
    client = AsyncRerankClient(tiny_server.base_url, tiny_server.model_name)
    sync = client.to_sync()
    base = VLLMRerank(client=client, metadata_mode=MetadataMode.NONE)
    other = "Given a question, find the passage in a cookbook that answers it"
    for reranker, instruction in ((base, None), (base.with_instruction(other), other)):
        out = reranker.postprocess_nodes(make_nodes(), query_str=QUERY)
        direct = sync.rerank(QUERY, TEXTS, instruction=instruction)
        assert [n.score for n in out] == pytest.approx(direct.scores, abs=1e-5)
    assert base.instruction is None
    default = sync.rerank(QUERY, TEXTS).scores
    assert default != pytest.approx(sync.rerank(QUERY, TEXTS, instruction=other).scores)
