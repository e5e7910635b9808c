"""``long_documents="chunk"``: a long document scored by its best window (MaxP).

The pure parts (windows, merging) without I/O; the whole path against the real MiniLM server
(window 256 tokens): a document whose answer sits past the window ranks first with chunking
and not with truncation, through the client, the cache and both adapters.
"""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import pytest

from rerank_plugins import AsyncRerankClient, RerankClient, RerankConfigError
from rerank_plugins._engine.chunks import OVERLAP, ChunkPlan, plan, windows
from rerank_plugins.cache import InMemoryCache
from rerank_plugins.config import RerankConfig
from rerank_plugins.types import Chunk, ChunkedRerankItem, RerankItem

# --- pure parts ------------------------------------------------------------------------


def test_windows_cover_the_document_with_the_stated_overlap() -> None:
    spans = windows(1000, 200)
    assert spans[0] == (0, 200) and spans[-1] == (800, 1000)
    assert all(end - start == 200 for start, end in spans)  # the tail is a full window too
    shared = [a_end - b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)]
    assert shared[:-1] == [int(200 * OVERLAP)] * (len(shared) - 1)
    assert all(s >= int(200 * OVERLAP) for s in shared)
    covered = set().union(*(range(s, e) for s, e in spans))
    assert covered == set(range(1000))


def test_a_document_that_fits_is_one_window() -> None:
    assert windows(200, 200) == [(0, 200)]
    assert windows(5, 200) == [(0, 5)]
    with pytest.raises(ValueError):
        windows(10, 0)


def test_best_chunk_gives_the_document_score_and_is_named() -> None:
    chunks = [Chunk(n, 3, n * 10, n * 10 + 20, f"c{n}") for n in range(3)]
    built: ChunkPlan = plan(["short", "long", "also short"], {1: chunks})
    assert built.pieces == ["short", "c0", "c1", "c2", "also short"]
    assert built.owners == [0, 1, 1, 1, 2]
    best, chosen = built.best([0.5, 0.1, 0.9, 0.3, 0.2], 3)
    assert best == [0.5, 0.9, 0.2]
    assert chosen == {1: chunks[1]}


def test_a_chunked_item_is_still_a_three_tuple() -> None:
    chunk = Chunk(2, 4, 300, 500, "the answer")
    item = ChunkedRerankItem(7, 0.25, "doc", chunk)
    index, score, document = item  # code that unpacks items keeps working
    assert (index, score, document) == (7, 0.25, "doc") and item == RerankItem(7, 0.25, "doc")
    assert item.chunk == chunk and RerankItem(7, 0.25, "doc").chunk is None
    assert pickle.loads(pickle.dumps(item)).chunk == chunk
    assert "chunk=Chunk(index=2" in repr(item)


def test_option_checked_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RerankConfigError, match="RERANK_LONG_DOCUMENTS"):
        RerankConfig("http://x", long_documents="split")  # type: ignore[arg-type]
    monkeypatch.setenv("RERANK_LONG_DOCUMENTS", "chunk")
    assert RerankConfig.resolve("http://x").long_documents == "chunk"
    assert RerankConfig.resolve("http://x", long_documents="truncate").long_documents == "truncate"
    monkeypatch.delenv("RERANK_LONG_DOCUMENTS")
    assert RerankConfig.resolve("http://x").long_documents == "truncate"


# --- against MiniLM (window 256 tokens) --------------------------------------------------

QUERY = "What is the capital city of France?"
FILLER = " ".join(
    [
        "Tomato plants need six hours of sun and steady watering through the summer.",
        "Mulch keeps the soil moist and stops weeds from crowding the young seedlings.",
        "Prune the lower leaves once the first fruit sets to let air reach the stems.",
        "Compost made from kitchen scraps feeds the beds slowly over the whole season.",
        "Stake tall varieties early, before the roots spread and the vines grow heavy.",
    ]
    * 8
)
ANSWER = " ".join(
    [
        "Paris is the capital city of France.",
        "The French government sits in Paris, the capital of France.",
        "Paris has been the capital of France for centuries.",
    ]
    * 3
)
LONG_DOC = f"{FILLER} {ANSWER}"  # the answer starts some 500 tokens in
DOCS = [
    "Berlin is a large city in Germany with many museums.",
    LONG_DOC,
    "Bananas are a yellow fruit rich in potassium.",
    "The stock market closed higher on Tuesday after a quiet session.",
]


@pytest.fixture
def server(minilm_server: Any) -> Any:
    return minilm_server


def test_the_answer_past_the_window_ranks_first_only_with_chunks(server: Any) -> None:
    with RerankClient(server.base_url, server.model_name) as truncating:
        cut = truncating.rerank(QUERY, DOCS)
    with RerankClient(server.base_url, server.model_name, long_documents="chunk") as chunking:
        whole = chunking.rerank(QUERY, DOCS)
        single = chunking.rerank(QUERY, [LONG_DOC])
    assert cut.indices[0] != 1, "truncation keeps the head, which holds no answer"
    assert whole.indices[0] == 1
    best = whole.items[0]
    assert best.document is LONG_DOC  # the caller's document, not the chunk
    assert isinstance(best, ChunkedRerankItem) and best.chunk.count > 2
    assert best.chunk.index == best.chunk.count - 1  # the answer is in the last window
    assert "capital of france" in best.chunk.text.lower()  # detokenized: uncased here
    assert best.chunk.end - best.chunk.start <= 256
    assert all(item.chunk is None for item in whole.items[1:])  # short ones are not split
    assert best.score == pytest.approx(single.items[0].score, abs=1e-5)
    # The first chunk is the truncated text, so no document scores lower with chunks (MaxP).
    truncated = dict(zip(cut.indices, cut.scores, strict=True))
    assert all(s >= truncated[i] - 1e-4 for i, s in zip(whole.indices, whole.scores, strict=True))
    # Every chunk is scored and counted: more prompt tokens than the truncated call.
    assert whole.usage.prompt_tokens > cut.usage.prompt_tokens + 256


async def test_chunks_through_the_cache_and_top_n(server: Any) -> None:
    cache = InMemoryCache()
    async with AsyncRerankClient(
        server.base_url, server.model_name, long_documents="chunk", cache=cache
    ) as client:
        first = await client.rerank(QUERY, DOCS, top_n=2)
        again = await client.rerank(QUERY, DOCS, top_n=2)
    assert first.indices[0] == 1 and len(first) == 2
    assert again.indices == first.indices and again.scores == pytest.approx(first.scores)
    assert again.items[0].chunk == first.items[0].chunk
    assert again.usage.prompt_tokens == 0  # all from the cache, the chunks included


def test_both_adapters_pass_the_option_through(server: Any) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.langchain import VLLMRerank as DocumentRerank
    from rerank_plugins.llamaindex import VLLMRerank as NodeRerank

    settings = {"base_url": server.base_url, "model": server.model_name}
    docs = [Document(page_content=text) for text in DOCS]
    nodes = [NodeWithScore(node=TextNode(text=text), score=1.0) for text in DOCS]
    for mode, first in (("truncate", False), ("chunk", True)):
        lc = DocumentRerank(long_documents=mode, **settings).compress_documents(docs, QUERY)
        li = NodeRerank(long_documents=mode, **settings).postprocess_nodes(nodes, query_str=QUERY)
        assert (lc[0].page_content == LONG_DOC) is first
        assert (li[0].node.get_content() == LONG_DOC) is first
        assert len(lc) == len(li) == len(DOCS)
