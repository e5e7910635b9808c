"""Session fixtures: real vLLM servers for integration tests, and transformers reference scores.

Fixtures (each server fixture yields a ``ServerHandle`` with ``.base_url``, ``.model_name``,
``.model_path``, ``.log_path``, ``.pid``, ``.api_key``, ``.prompt_mode`` ("server", "client" or
"none"), ``.kind``, ``.ca_path``, ``.client_cert``):

- ``tiny_server``           tiny random-weight Qwen3 reranker, the client-formatting OPT-OUT
                            (prompt_mode "client": no template), max_model_len 512; served as
                            "tiny-qwen3-reranker".
- ``tiny_server_template``  the same model with rerank-serve's defaults (the packaged template),
                            the all-routes API key guard (``.api_key``) and
                            ``--enable-request-id-headers``; served as
                            "tiny-qwen3-reranker-template".
- ``tiny_server_family``    the same model copied to ``models/plain-scorer`` (neither path nor
                            served name "plain-scorer" says qwen3 or reranker), started with
                            ``family="qwen3-reranker"`` and defaults otherwise (template).
- ``minilm_server``         all-MiniLM-L6-v2 (no template needed), max_model_len 256.
- ``tls_server``            tiny model, defaults, HTTPS with a session-made CA; requires a client
                            certificate. ``.ca_path`` (CA file), ``.client_cert`` (cert_path,
                            key_path), ``.ssl_context()`` (both loaded): ``httpx.post(...,
                            verify=s.ssl_context())`` (httpx 0.28's ``post`` takes no
                            ``cert=``, and ``Client(verify=<path>, cert=...)`` silently drops
                            the certificate: load both into one context).
                            Served as "tiny-qwen3-reranker-tls"; base_url is ``https://``.
- ``victim_server``         tiny model, defaults, for reliability tests: ``.pause()`` (SIGSTOP),
                            ``.resume()`` (SIGCONT), ``.kill()`` (SIGKILL, reaped), ``.restart()``
                            (fresh server on the same port, waits healthy); all by the PID /
                            process group the session started. Served as
                            "tiny-qwen3-reranker-victim". A test that leaves it paused or
                            killed should ``restart()``/``resume()`` it for the next one.
- ``mxbai_server``          tiny random-weight mxbai-rerank-v2 look-alike (Qwen2) with
                            rerank-serve's defaults for its family (overrides + template);
                            ``.kind`` "mxbai". Served as "tiny-mxbai-rerank-base-v2".
- ``bge_gemma_server``      tiny random-weight bge-reranker-v2-gemma look-alike (Gemma), defaults;
                            ``.kind`` "bge-gemma". Served as "tiny-bge-reranker-v2-gemma".
- ``jina_v3_server``        tiny random-weight jina-reranker-v3 look-alike (native JinaForRanking,
                            LISTWISE: one prompt per request), defaults; ``.kind`` "jina-v3";
                            reference via ``reference_scores.run({"kind": "jina-v3", ...})``.
                            Served as "tiny-jina-reranker-v3".
- ``reference_scores``      callable computing transformers reference scores in the vLLM venv.

Every server that some collected test needs is spawned right after collection, all at once, so
start-up overlaps the unit tests; a fixture waits only for its own server. Tests using them are
marked ``integration`` automatically. Without the vLLM venv they FAIL (CI must not pass with
them skipped) unless RERANK_ALLOW_SKIP_INTEGRATION=1; a skipped integration test also fails the
session unless that variable is set.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import servers as support
from support.servers import ServerHandle, ServerPool

# The demo is not part of the package: its tests import it from the repo root. Appended, not
# prepended, so that `rerank_plugins` still comes from the installed package under test.
sys.path.append(str(support.REPO_ROOT))

_POOL = ServerPool()
_SKIPPED_INTEGRATION: list[str] = []


def _servers_used(item: pytest.Item) -> list[str]:
    """The session servers a test uses, by fixture name or by parameter value."""
    names = set(getattr(item, "fixturenames", ()))
    # Tests that pick a server by parameter (request.getfixturevalue) count as well.
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= {v for v in callspec.params.values() if isinstance(v, str)}
    return [n for n in support.SERVER_FIXTURES if n in names]


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    # Before the other implementations: mark server tests so that -m can deselect them.
    for item in items:
        if _servers_used(item) or "reference_scores" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    yield
    # After them (-m/-k deselection done): start only what the selected tests need.
    needed: list[str] = []
    for item in items:
        needed += [n for n in _servers_used(item) if n not in needed]
    if needed and not config.option.collectonly:
        # Spawn from the main thread: the servers' PDEATHSIG is tied to the spawning thread.
        _POOL.start(needed)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Runs on normal exit and on Ctrl-C (KeyboardInterrupt) alike.
    _POOL.stop_all()
    if _SKIPPED_INTEGRATION and not support.allow_skip() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = _POOL.summary()
    if lines:
        terminalreporter.write_sep("-", "vLLM test servers")
        for line in lines:
            terminalreporter.write_line(line)
    if _SKIPPED_INTEGRATION and not support.allow_skip():
        terminalreporter.write_sep("!", "integration tests were skipped: failing the run")
        for nodeid in _SKIPPED_INTEGRATION:
            terminalreporter.write_line(f"skipped: {nodeid}")
        terminalreporter.write_line(f"(set {support.ALLOW_SKIP_ENV}=1 to allow skipping)")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords and report.when in ("setup", "call"):
        _SKIPPED_INTEGRATION.append(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    # A failing test against a server shows what the server said.
    for name in _servers_used(item):
        if name in _POOL.handles:
            handle = _POOL.handles[name]
            tail = handle.log_tail(40)
            if tail:
                report.sections.append((f"vLLM log ({name}, {handle.log_path})", tail))


def _server(name: str) -> ServerHandle:
    try:
        return _POOL.get(name)
    except Exception as exc:
        message = f"{name} is unavailable: {exc}"
    # Outside the except block, so the report shows the message and the log tail only.
    if support.allow_skip() and support.unavailable_reason() is not None:
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def tiny_server() -> ServerHandle:
    return _server("tiny_server")


@pytest.fixture(scope="session")
def tiny_server_template() -> ServerHandle:
    return _server("tiny_server_template")


@pytest.fixture(scope="session")
def tiny_server_family() -> ServerHandle:
    return _server("tiny_server_family")


@pytest.fixture(scope="session")
def minilm_server() -> ServerHandle:
    return _server("minilm_server")


@pytest.fixture(scope="session")
def tls_server() -> ServerHandle:
    return _server("tls_server")


@pytest.fixture(scope="session")
def victim_server() -> ServerHandle:
    return _server("victim_server")


@pytest.fixture(scope="session")
def mxbai_server() -> ServerHandle:
    return _server("mxbai_server")


@pytest.fixture(scope="session")
def bge_gemma_server() -> ServerHandle:
    return _server("bge_gemma_server")


@pytest.fixture(scope="session")
def jina_v3_server() -> ServerHandle:
    return _server("jina_v3_server")


class ReferenceScores:
    """Transformers reference scores, computed by tests/support/reference_scores.py.

    ``ref(server_or_model_path, pairs, kind=None, format="raw", instruction=None,
    max_length=256) -> list[float]``; ``ref.tokens(model_path, texts) -> list[list[int]]``;
    ``ref.run(payload) -> dict`` for the raw protocol.
    """

    def __call__(
        self,
        model: ServerHandle | str | Path,
        pairs: Sequence[tuple[str, str] | list[str]],
        *,
        kind: str | None = None,
        format: str = "raw",
        instruction: str | None = None,
        max_length: int = 256,
    ) -> list[float]:
        if isinstance(model, ServerHandle):
            kind = kind or model.kind
            model = model.model_path
        if kind is None:
            kind = "qwen3" if "qwen3" in str(model).lower() else "minilm"
        payload = {
            "model": str(model),
            "kind": kind,
            "pairs": [list(p) for p in pairs],
            "format": format,
            "instruction": instruction,
            "max_length": max_length,
        }
        scores: list[float] = self.run(payload)["scores"]
        return scores

    def tokens(self, model: ServerHandle | str | Path, texts: Sequence[str]) -> list[list[int]]:
        path = model.model_path if isinstance(model, ServerHandle) else model
        ids: list[list[int]] = self.run(
            {"model": str(path), "kind": "tokens", "texts": list(texts)}
        )["ids"]
        return ids

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        reason = support.unavailable_reason()
        if reason is not None:
            if support.allow_skip():
                pytest.skip(reason)
            pytest.fail(reason, pytrace=False)
        return support.run_reference(payload)


@pytest.fixture(scope="session")
def reference_scores() -> ReferenceScores:
    return ReferenceScores()
