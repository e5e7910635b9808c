"""Calls through an HTTP forward proxy, set by ``proxy=`` or by the environment.

Requests go straight to the transport httpx's client picks for the server's URL, so the
proxy mounts httpx builds (from ``proxy=``, or ``HTTP_PROXY`` with ``trust_env``) must still
carry every request: the loopback fault proxy, acting as a forward proxy, counts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from support.fault_proxy import FaultProxy
from support.texts import DOCS, QUERY

from rerank_plugins import AsyncRerankClient, RerankClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def forward_proxy(minilm_server: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(minilm_server.base_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_proxy_setting_carries_every_request(minilm_server: Any, forward_proxy: FaultProxy) -> None:
    expected = RerankClient(minilm_server.base_url).rerank(QUERY, DOCS)
    forward_proxy.reset_stats()
    client = AsyncRerankClient(minilm_server.base_url, proxy=forward_proxy.url)
    result = asyncio.run(client.rerank(QUERY, DOCS))
    assert result.indices == expected.indices
    assert result.scores == pytest.approx(expected.scores, abs=1e-6)
    # Server reads, the probe and the call: all of them through the proxy.
    assert forward_proxy.stats.forwarded == sum(forward_proxy.stats.requests.values()) >= 4
    assert forward_proxy.stats.requests["/v2/rerank"] >= 2
    with RerankClient(minilm_server.base_url, proxy=forward_proxy.url) as sync:
        before = forward_proxy.stats.forwarded
        assert sync.rerank(QUERY, DOCS).indices == expected.indices
        assert forward_proxy.stats.forwarded > before


def test_proxy_environment_is_honoured_only_with_trust_env(
    minilm_server: Any, forward_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    forward_proxy.reset_stats()
    trusting = AsyncRerankClient(minilm_server.base_url)
    assert asyncio.run(trusting.rerank(QUERY, DOCS)).indices[0] == 1
    assert forward_proxy.stats.forwarded >= 4

    forward_proxy.reset_stats()
    ignoring = AsyncRerankClient(minilm_server.base_url, trust_env=False)
    assert asyncio.run(ignoring.rerank(QUERY, DOCS)).indices[0] == 1
    assert forward_proxy.stats.forwarded == 0
