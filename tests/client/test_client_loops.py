"""Which event loop a call runs on, and that every pool is closed, against a real vLLM server.

An async client runs a call on its caller's loop when that loop is its home (no hop to the
I/O thread); calls from any other loop, and the sync twin's, run on the I/O thread. These
tests check each path gives the same ranking and that each pool is closed when its loop ends
or the client is closed, whichever thread asks.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.texts import DOCS, QUERY

from rerank_plugins import AsyncRerankClient

pytestmark = pytest.mark.integration


def home_http(client: AsyncRerankClient) -> httpx.AsyncClient | None:
    return client.debug_view().pools.home_http


def home_loop(client: AsyncRerankClient) -> asyncio.AbstractEventLoop | None:
    return client.debug_view().pools.home_loop


def io_started(client: AsyncRerankClient) -> bool:
    return client.debug_view().pools.io_running


@pytest.fixture
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop running in a thread of its own, as a web server's would; stopped at the end."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def test_calls_run_on_the_callers_loop_with_no_io_thread(minilm_server: Any) -> None:
    client = AsyncRerankClient(minilm_server.base_url)
    threads: set[threading.Thread] = set()
    results = await asyncio.gather(
        *(
            client.rerank(
                QUERY, DOCS, on_progress=lambda *_: threads.add(threading.current_thread())
            )
            for _ in range(8)
        )
    )
    assert {tuple(r.indices) for r in results} == {(1, 2, 0)}
    assert threads == {threading.current_thread()}, "a call ran off the caller's loop"
    assert not io_started(client), "the I/O thread was started for calls on the home loop"
    http = home_http(client)
    assert http is not None and not http.is_closed
    await client.aclose()
    assert http.is_closed and home_loop(client) is None
    # A later call adopts this loop again, with a fresh pool.
    assert (await client.rerank(QUERY, DOCS)).indices == [1, 2, 0]
    assert home_http(client) not in (None, http)
    await client.aclose()


def test_the_home_pool_closes_when_asyncio_run_ends(minilm_server: Any) -> None:
    client = AsyncRerankClient(minilm_server.base_url)
    pools: list[httpx.AsyncClient | None] = []

    async def call() -> list[int]:
        result = await client.rerank(QUERY, DOCS)
        pools.append(home_http(client))
        return result.indices

    gc.collect()  # what earlier tests left behind is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(call()) == [1, 2, 0]
        first = pools[0]
        assert first is not None and first.is_closed, "asyncio.run ended with the pool open"
        assert asyncio.run(call()) == [1, 2, 0]  # the next loop is home in its turn
        assert pools[1] is not first and pools[1] is not None and pools[1].is_closed
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    assert not io_started(client)


def test_a_second_loop_runs_on_the_io_thread_while_the_first_is_home(
    minilm_server: Any, loop_in_thread: asyncio.AbstractEventLoop
) -> None:
    client = AsyncRerankClient(minilm_server.base_url)
    on_home = asyncio.run_coroutine_threadsafe(client.rerank(QUERY, DOCS), loop_in_thread)
    assert on_home.result(60).indices == [1, 2, 0]
    assert home_loop(client) is loop_in_thread

    # Another loop (this thread's) while the first is alive: the I/O thread serves it.
    assert asyncio.run(client.rerank(QUERY, DOCS)).indices == [1, 2, 0]
    assert io_started(client) and home_loop(client) is loop_in_thread
    # The sync twin, likewise.
    assert client.to_sync().rerank(QUERY, DOCS).indices == [1, 2, 0]

    # close() from this thread closes the home pool on its own loop, and the I/O pool.
    http = home_http(client)
    io_http = client.debug_view().pools.io_http
    assert http is not None and io_http is not None
    client.to_sync().close()
    assert http.is_closed and io_http.is_closed and not io_started(client)


def test_close_of_an_idle_home_loop_closes_its_pool(minilm_server: Any) -> None:
    client = AsyncRerankClient(minilm_server.base_url)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(client.rerank(QUERY, DOCS)).indices == [1, 2, 0]
        http = home_http(client)
        assert http is not None
        client.to_sync().close()  # the home loop is idle: its pool is closed on it, here
        assert http.is_closed
    finally:
        loop.close()


async def test_a_sync_close_on_the_home_loop_closes_the_pool_soon(minilm_server: Any) -> None:
    client = AsyncRerankClient(minilm_server.base_url)
    await client.rerank(QUERY, DOCS)
    http = home_http(client)
    assert http is not None
    client.to_sync().close()  # cannot block this loop: the pool is closed by a task
    for _ in range(100):
        if http.is_closed:
            break
        await asyncio.sleep(0.01)
    assert http.is_closed


async def test_a_client_with_its_own_transport_stays_on_the_io_thread(
    minilm_server: Any,
) -> None:
    client = AsyncRerankClient(minilm_server.base_url, transport=httpx.AsyncHTTPTransport())
    assert (await client.rerank(QUERY, DOCS)).indices == [1, 2, 0]
    assert home_loop(client) is None and io_started(client)
    await client.aclose()
    assert not io_started(client)
