"""The evaluation runner without a server: one call per query with every query in flight, the
pairs it counts, and the sync entry point from inside a running loop (the private I/O loop)."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import pytest

from rerank_plugins import RerankConnectionError
from rerank_plugins.eval import evaluate_reranking, load_collection
from rerank_plugins.eval.report import Progress, RerankSetting
from rerank_plugins.eval.run import _rerank_all, first_stage_bm25


@dataclass
class _Item:
    index: int
    score: float


@dataclass
class _Result:
    items: list[_Item]


class _GatedClient:
    """Answers no call until ``expected`` calls are waiting: a runner that awaited each query
    before sending the next would never get an answer (and the test's wait_for fails)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.waiting = 0
        self.calls: list[tuple[str, int]] = []
        self.all_in = asyncio.Event()

    async def rerank(self, query: str, documents: list[str], **_: object) -> _Result:
        self.calls.append((query, len(documents)))
        self.waiting += 1
        if self.waiting == self.expected:
            self.all_in.set()
        await self.all_in.wait()
        # Reverse BM25's order so the result visibly comes from these scores.
        return _Result([_Item(i, float(i)) for i in range(len(documents))][::-1])


async def test_every_query_is_one_call_and_all_are_in_flight_together() -> None:
    coll = load_collection("eval_en")
    queries = coll.judged_queries()[:8]
    candidates = first_stage_bm25(coll, queries, 5)
    client = _GatedClient(expected=len(queries))
    bar = Progress(len(queries), "x", io.StringIO(), enabled=False)
    ranked = await asyncio.wait_for(
        _rerank_all(client, coll, candidates, RerankSetting(), None, bar), timeout=60
    )
    assert len(client.calls) == len(queries)  # one call per query, not per batch or document
    assert bar.done == len(queries)
    for qid in queries:
        bm25_ids = [d for d, _ in candidates[qid]]
        assert [d for d, _ in ranked[qid]] == bm25_ids[::-1]


async def test_parallel_bounds_the_queries_in_flight() -> None:
    coll = load_collection("eval_en")
    queries = coll.judged_queries()[:6]
    candidates = first_stage_bm25(coll, queries, 3)
    client = _GatedClient(expected=6)
    bar = Progress(len(queries), "x", io.StringIO(), enabled=False)
    task = asyncio.ensure_future(_rerank_all(client, coll, candidates, RerankSetting(), 2, bar))
    while client.waiting < 2:
        await asyncio.sleep(0)
    for _ in range(50):  # let every runnable task run: none may pass the gate of 2
        await asyncio.sleep(0)
    assert client.waiting == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_sync_entry_point_works_inside_a_running_loop() -> None:
    # As from Jupyter: the runner goes to a private I/O loop, so the caller's running loop
    # neither blocks it nor trips asyncio.run; the client's own error comes back unchanged.
    with pytest.raises(RerankConnectionError):
        evaluate_reranking(
            "eval_en",
            base_url="http://127.0.0.1:9",
            max_queries=2,
            depth=3,
            progress=False,
            client_options={"max_retries": 0, "timeout": 5},
        )
