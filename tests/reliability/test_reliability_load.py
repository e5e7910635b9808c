"""Reliability under load: one client shared by many callers, and what it leaves behind.

64 concurrent async callers and 16 threads (first calls released together) on ONE client
against the real MiniLM server through the fault proxy, which counts the connections: no
errors, peak connections <= max_connections, every socket and fd closed after close();
200 ``asyncio.run()`` calls on one AsyncRerankClient leave no fds and no ResourceWarning.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from support.fault_proxy import RERANK_PATHS, FaultProxy, fd_count, wait_until

from rerank_plugins import AsyncRerankClient, RerankClient

QUERY = "Which city is the capital of France?"
DOCS = [
    f"Document {i}: {'Paris is in France' if i % 3 == 0 else 'bananas are yellow'}."
    for i in range(8)
]
MAX_CONCURRENCY = 4
# The client's pool bound (max_connections, across all callers); max_concurrency is per call.
LIMIT = 6
# The settings of the clients the load tests share among callers.
POOLED: dict[str, Any] = {
    "max_concurrency": MAX_CONCURRENCY,
    "max_connections": LIMIT,
    "deadline": 60,
}


@pytest.fixture
def proxy(proxy_server: FaultProxy) -> Iterator[FaultProxy]:
    proxy_server.clear()
    assert wait_until(lambda: proxy_server.stats.open == 0), "connections left from before"
    proxy_server.reset_stats()
    yield proxy_server


def assert_ranking(result: Any) -> None:
    assert sorted(result.indices) == list(range(len(DOCS)))
    assert all(math.isfinite(s) for s in result.scores)
    assert result.indices[0] % 3 == 0, "a Paris document should rank first"


def test_64_async_callers_share_one_client(proxy, minilm_server, ledger):
    baseline = fd_count()
    docs = list(DOCS)

    async def main() -> list[Any]:
        client = AsyncRerankClient(proxy.url, minilm_server.model_name, **POOLED)
        try:
            return await asyncio.gather(
                *(client.rerank(QUERY, docs) for _ in range(64)), return_exceptions=True
            )
        finally:
            await client.aclose()

    results = asyncio.run(main())
    ledger.case("load", 64)
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors:
        ledger.typed("load", error)
    assert not errors, f"{len(errors)} of 64 calls failed, first: {errors[0]!r}"
    for result in results:
        assert_ranking(result)
    assert docs == DOCS
    ledger.peak("64 async callers", proxy.stats.peak, LIMIT)
    assert proxy.stats.hits(RERANK_PATHS) >= 64
    assert proxy.stats.peak <= LIMIT, f"peak {proxy.stats.peak} connections > {LIMIT}"
    assert wait_until(lambda: proxy.stats.open == 0), "sockets left open after aclose()"
    assert wait_until(lambda: fd_count() <= baseline), f"fds {fd_count()} > {baseline}"


def test_many_batches_of_one_call_respect_the_limit(proxy, minilm_server, ledger):
    docs = [f"text {i} about Paris" for i in range(48)]
    with RerankClient(
        proxy.url, minilm_server.model_name, max_batch_size=1, max_concurrency=MAX_CONCURRENCY
    ) as client:
        result = client.rerank(QUERY, docs)
    ledger.case("load")
    assert sorted(result.indices) == list(range(48))
    assert 48 <= proxy.stats.hits(RERANK_PATHS) <= 49, "48 batches (and perhaps a route probe)"
    ledger.peak("48 batches of one sync call", proxy.stats.peak, LIMIT)
    assert proxy.stats.peak <= LIMIT


def test_16_threads_first_use_share_one_pool(proxy, minilm_server, ledger):
    baseline = fd_count()
    client = RerankClient(proxy.url, minilm_server.model_name, **POOLED)
    barrier = threading.Barrier(16)
    results: list[Any] = [None] * 16

    def worker(n: int) -> None:
        barrier.wait()  # the very first calls on the client, all at once
        try:
            results[n] = [client.rerank(QUERY, DOCS) for _ in range(4)]
        except BaseException as exc:
            results[n] = exc

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    client.close()
    ledger.case("load", 64)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"
    for per_thread in results:
        for result in per_thread:
            assert_ranking(result)
    ledger.peak("16 threads", proxy.stats.peak, LIMIT)
    assert proxy.stats.peak <= LIMIT, f"peak {proxy.stats.peak} connections > {LIMIT}"
    # One pool: it never opens more connections than its limit, however many threads race.
    assert proxy.stats.accepted <= LIMIT, (
        f"{proxy.stats.accepted} connections accepted: more than one pool was created"
    )
    assert wait_until(lambda: proxy.stats.open == 0), "sockets left open after close()"
    assert wait_until(lambda: fd_count() <= baseline), f"fds {fd_count()} > {baseline}"


def test_200_asyncio_runs_on_one_async_client_leak_nothing(proxy, minilm_server, ledger):
    client = AsyncRerankClient(proxy.url, minilm_server.model_name, deadline=30)
    asyncio.run(client.rerank(QUERY, DOCS))  # warm: server info is read once
    gc.collect()
    baseline = fd_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(200):
            result = asyncio.run(client.rerank(QUERY, DOCS))
            assert_ranking(result)
        during = fd_count()
        asyncio.run(client.aclose())
        gc.collect()
        wait_until(lambda: proxy.stats.open == 0)
        gc.collect()
    ledger.case("load", 200)
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource, f"{len(resource)} ResourceWarnings, first: {resource[0].message}"
    assert during - baseline <= 4, f"fds grew by {during - baseline} over 200 asyncio.run()"
    assert wait_until(lambda: fd_count() <= baseline), f"fds {fd_count()} > {baseline}"
    assert proxy.stats.open == 0, f"{proxy.stats.open} connections still open after aclose()"


def test_sync_client_close_leaves_no_resource_warning(proxy, minilm_server):
    baseline = fd_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            with RerankClient(proxy.url, minilm_server.model_name) as client:
                assert_ranking(client.rerank(QUERY, DOCS))
        del client
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert wait_until(lambda: proxy.stats.open == 0)
    assert wait_until(lambda: fd_count() <= baseline), f"fds {fd_count()} > {baseline}"
