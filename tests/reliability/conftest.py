"""Fixtures every reliability file shares: the session's ledger and the fault proxy before MiniLM.

Each test module gets its own proxy server (module scope); ``proxy`` hands it to a test with no
faults set and fresh counters (test_reliability_load.py overrides it to also wait for idle).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.fault_proxy import FaultProxy, Ledger, ledger_for


@pytest.fixture(scope="session", autouse=True)
def ledger(pytestconfig: pytest.Config) -> Ledger:
    return ledger_for(pytestconfig)


@pytest.fixture(scope="module")
def proxy_server(minilm_server: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(minilm_server.base_url).start()
    yield proxy
    proxy.stop()
    assert not proxy.running, "the proxy thread did not stop"


@pytest.fixture
def proxy(proxy_server: FaultProxy) -> Iterator[FaultProxy]:
    proxy_server.clear()
    proxy_server.reset_stats()
    yield proxy_server
    proxy_server.clear()
