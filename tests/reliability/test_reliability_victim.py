"""Reliability against a real server that dies, freezes and comes back (``victim_server``).

SIGKILL mid-call -> RerankConnectionError fast; SIGSTOP -> RerankTimeoutError within the
deadline; after a restart the SAME client works again without being rebuilt.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConnectionError,
    RerankError,
    RerankTimeoutError,
)

# Seconds a call may run past its deadline (scheduling on a loaded 2-core machine). A stopped
# server holds a request for the whole ``timeout`` (30 s here), so a client that ignored its
# deadline still fails the bound; the typed error naming the deadline proves the mechanism.
GRACE = 3.0
QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "Berlin is the capital of Germany.",
]


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(base_url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def victim(victim_server: Any) -> Iterator[Any]:
    """The victim server, healthy before and after each test."""
    if not _healthy(victim_server.base_url):
        victim_server.resume()
        if not _healthy(victim_server.base_url):
            victim_server.restart()
    yield victim_server
    victim_server.resume()
    if not _healthy(victim_server.base_url):
        victim_server.restart()


def _assert_ranking(result: Any) -> None:
    assert sorted(result.indices) == list(range(len(DOCS)))
    assert all(item.document == DOCS[item.index] for item in result.items)


def test_sigkill_mid_call_is_a_connection_error_fast(victim, ledger):
    client = RerankClient(
        victim.base_url,
        victim.model_name,
        deadline=60,
        max_retries=2,
        retry_backoff=0.05,
        max_batch_size=4,
        max_concurrency=2,
    )
    docs = [f"document {i} about Paris and France" for i in range(400)]
    stop = threading.Event()
    batches_back = threading.Event()  # a batch has come back: the call's batches are going out
    outcome: dict[str, Any] = {}

    def caller() -> None:
        calls = 0
        while not stop.is_set():
            try:
                client.rerank(QUERY, docs, on_progress=lambda done, total: batches_back.set())
                calls += 1
            except BaseException as exc:
                outcome["error"], outcome["at"], outcome["calls"] = exc, time.monotonic(), calls
                return

    thread = threading.Thread(target=caller)
    thread.start()
    # Killed in the middle of a call: one of its 100 batches is back, the rest are in flight.
    assert batches_back.wait(120), outcome.get("error")
    killed_at = time.monotonic()
    victim.kill()
    thread.join(30)
    stop.set()
    client.close()
    ledger.case("victim")
    assert "error" in outcome, "calls kept succeeding after SIGKILL"
    error = outcome["error"]
    if not isinstance(error, RerankError):
        ledger.bug("victim", error)
    else:
        ledger.typed("victim", error)
    assert isinstance(error, RerankConnectionError), f"got {error!r}"
    assert not isinstance(error, RerankTimeoutError), "a dead server refuses: not a timeout"
    assert outcome["at"] - killed_at < 5, f"took {outcome['at'] - killed_at:.1f}s after the kill"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigstop_is_a_timeout_within_the_deadline(victim, ledger, mode):
    deadline = 2.0
    kwargs = {"deadline": deadline, "timeout": 30, "max_retries": 2}
    if mode == "sync":
        client = RerankClient(victim.base_url, victim.model_name, **kwargs)
        _assert_ranking(client.rerank(QUERY, DOCS))  # connected and warm
    else:
        aclient = AsyncRerankClient(victim.base_url, victim.model_name, **kwargs)
    victim.pause()
    try:
        start = time.monotonic()
        with pytest.raises(RerankTimeoutError) as info:
            if mode == "sync":
                client.rerank(QUERY, DOCS)
            else:

                async def go() -> None:
                    try:
                        await aclient.rerank(QUERY, DOCS)
                    finally:
                        await aclient.aclose()

                asyncio.run(go())
        elapsed = time.monotonic() - start
    finally:
        victim.resume()
        if mode == "sync":
            client.close()
    ledger.case("victim")
    ledger.typed("victim", info.value)
    ledger.over_deadline(f"victim/sigstop/{mode}", elapsed, deadline)
    assert elapsed <= deadline + GRACE, f"{elapsed:.2f}s for a deadline of {deadline}s"
    # Ended by the deadline while waiting on the server, not by the 30 s request timeout.
    assert f"deadline of {deadline:g}s passed during " in str(info.value), info.value


def test_restart_same_sync_client_works_again(victim, ledger):
    client = RerankClient(
        victim.base_url, victim.model_name, deadline=10, max_retries=1, retry_backoff=0.05
    )
    try:
        _assert_ranking(client.rerank(QUERY, DOCS))
        victim.kill()
        start = time.monotonic()
        with pytest.raises(RerankConnectionError):
            client.rerank(QUERY, DOCS)
        assert time.monotonic() - start < 5, "a refused connection must fail fast"
        victim.restart()
        _assert_ranking(client.rerank(QUERY, DOCS))  # same client, not rebuilt
        _assert_ranking(client.rerank(QUERY, DOCS))
    finally:
        client.close()
    ledger.case("victim")


def test_restart_same_async_client_works_again(victim, ledger):
    async def main() -> None:
        client = AsyncRerankClient(
            victim.base_url, victim.model_name, deadline=10, max_retries=1, retry_backoff=0.05
        )
        try:
            _assert_ranking(await client.rerank(QUERY, DOCS))
            await asyncio.to_thread(victim.kill)
            with pytest.raises(RerankConnectionError):
                await client.rerank(QUERY, DOCS)
            await asyncio.to_thread(victim.restart)
            _assert_ranking(await client.rerank(QUERY, DOCS))
        finally:
            await client.aclose()

    asyncio.run(main())
    ledger.case("victim")
