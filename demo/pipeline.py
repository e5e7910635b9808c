"""The demo's search pipeline without the UI: BM25 candidates, then a rerank, then a comparison.

BM25 indexes are cached by a hash of the corpus content, so each corpus is indexed once however
it arrives (bundled, pasted again, uploaded twice). A named corpus (a public set of 15,825
documents) is cached under its name instead: it is never hashed, and never evicted.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rerank_plugins import AsyncRerankClient, RerankResult
from rerank_plugins.retrieval import BM25Index, Hit, Language

__all__ = [
    "IndexCache",
    "Ranked",
    "SearchOutcome",
    "bm25_order",
    "corpus_key",
    "rerank_hits",
    "run_search",
]


def corpus_key(documents: Sequence[str]) -> str:
    """A content hash of a corpus: equal documents in equal order give equal keys."""
    digest = hashlib.sha256()
    for doc in documents:
        data = doc.encode("utf-8")
        # The length prefix keeps ["ab", "c"] and ["a", "bc"] apart.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class IndexCache:
    """BM25 indexes keyed by corpus content, least recently used dropped beyond ``size``.

    Indexes asked for by ``name`` are kept apart and never dropped: a large fixed corpus
    costs seconds to index, and a few uploads must not push it out.
    """

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._indexes: OrderedDict[str, BM25Index] = OrderedDict()
        self._named: dict[str, BM25Index] = {}
        self._lock = threading.Lock()
        self.builds = 0
        """How many indexes were built (tests check that a second query builds none)."""

    def get(
        self, documents: Sequence[str], name: str | None = None
    ) -> tuple[BM25Index, float | None]:
        """The index of ``documents`` and the build time in ms (None when it came from cache).

        With ``name``, the index is looked up by that name (the caller promises one name, one
        corpus) and kept for the life of the cache.
        """
        # One lock for build and lookup: two first queries on one corpus build it once.
        with self._lock:
            if name is not None:
                index = self._named.get(name)
                if index is None:
                    index, built_ms = self._build(documents)
                    self._named[name] = index
                    return index, built_ms
                return index, None
            key = corpus_key(documents)
            index = self._indexes.get(key)
            if index is not None:
                self._indexes.move_to_end(key)
                return index, None
            index, built_ms = self._build(documents)
            self._indexes[key] = index
            while len(self._indexes) > self._size:
                self._indexes.popitem(last=False)
            return index, built_ms

    def _build(self, documents: Sequence[str]) -> tuple[BM25Index, float]:
        start = time.perf_counter()
        index = BM25Index.from_documents(list(documents), language="auto")
        self.builds += 1
        return index, (time.perf_counter() - start) * 1000


@dataclass(frozen=True, slots=True)
class Ranked:
    """One shown document: its place after reranking and before (in BM25's list)."""

    rank: int
    score: float
    bm25_rank: int
    bm25_score: float
    index: int
    """Position in the corpus."""
    text: str

    @property
    def change(self) -> int:
        """Places gained by reranking (positive: moved up)."""
        return self.bm25_rank - self.rank

    @property
    def change_label(self) -> str:
        """``▲ 3``, ``▼ 2`` or ``=``."""
        if self.change > 0:
            return f"▲ {self.change}"
        if self.change < 0:
            return f"▼ {-self.change}"
        return "="


@dataclass(frozen=True)
class SearchOutcome:
    """Everything the display needs about one query."""

    query: str
    hits: tuple[Hit, ...]
    """BM25's candidates, best first."""
    ranked: tuple[Ranked, ...]
    """Every candidate after reranking, best first (the UI shows the first ``top_n``)."""
    result: RerankResult | None
    bm25_ms: float
    index_ms: float | None
    rerank_ms: float
    language: Language
    reranked: bool = True
    """False when the reranker was skipped: ``ranked`` is then BM25's own order."""

    def shown(self, top_n: int) -> tuple[Ranked, ...]:
        """The first ``top_n`` reranked documents."""
        return self.ranked[:top_n]


def bm25_order(hits: Sequence[Hit]) -> tuple[Ranked, ...]:
    """BM25's candidates as they are: each keeps its BM25 rank and score (nothing moves)."""
    return tuple(
        Ranked(
            rank=rank,
            score=hit.score,
            bm25_rank=rank,
            bm25_score=hit.score,
            index=hit.index,
            text=hit.text,
        )
        for rank, hit in enumerate(hits, start=1)
    )


async def rerank_hits(
    client: AsyncRerankClient,
    query: str,
    hits: Sequence[Hit],
    *,
    instruction: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[tuple[Ranked, ...], RerankResult]:
    """Rerank BM25 ``hits`` and pair each reranked document with its BM25 rank and score."""
    result = await client.rerank(
        query, [hit.text for hit in hits], instruction=instruction, on_progress=on_progress
    )
    ranked = tuple(
        Ranked(
            rank=rank,
            score=item.score,
            bm25_rank=item.index + 1,
            bm25_score=hits[item.index].score,
            index=hits[item.index].index,
            text=hits[item.index].text,
        )
        for rank, item in enumerate(result.items, start=1)
    )
    return ranked, result


async def run_search(
    client: AsyncRerankClient,
    cache: IndexCache,
    documents: Sequence[str],
    query: str,
    *,
    top_k: int,
    instruction: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    rerank: bool | Callable[[str, Sequence[Hit]], bool] = True,
    corpus_name: str | None = None,
) -> SearchOutcome:
    """BM25 top-``top_k`` over ``documents``, then rerank them all (the caller cuts to top-n).

    ``rerank`` False (or a callable of the query and the hits returning False) keeps BM25's
    order and sends nothing to the reranker. ``corpus_name`` caches the index by that name.
    """
    # Indexing a new corpus takes up to seconds (jieba's dictionary on first use): keep it off
    # the event loop, which serves every other user of the app meanwhile.
    index, index_ms = await asyncio.to_thread(cache.get, documents, corpus_name)
    start = time.perf_counter()
    hits = tuple(index.search(query, top_k))
    bm25_ms = (time.perf_counter() - start) * 1000
    ranked: tuple[Ranked, ...] = ()
    result = None
    rerank_ms = 0.0
    wanted = rerank(query, hits) if callable(rerank) else rerank
    if hits and not wanted:
        ranked = bm25_order(hits)
    elif hits:
        start = time.perf_counter()
        ranked, result = await rerank_hits(
            client, query, hits, instruction=instruction, on_progress=on_progress
        )
        rerank_ms = (time.perf_counter() - start) * 1000
    return SearchOutcome(
        query=query,
        hits=hits,
        ranked=ranked,
        result=result,
        bm25_ms=bm25_ms,
        index_ms=index_ms,
        rerank_ms=rerank_ms,
        language=index.language,
        reranked=bool(wanted) or not hits,
    )
