"""A real ``redis-server`` for the test session (and the cache benchmark).

``RedisServer()`` runs Debian's ``redis-server`` on a free 127.0.0.1 port with no persistence
(``--save "" --appendonly no``) in the foreground (``--daemonize no``), so the process we spawn
is the server and its PID is the one we stop. It dies with the process that started it
(``PR_SET_PDEATHSIG``), is its own process group (a Ctrl-C in the terminal reaches pytest, which
then stops it), and is only ever signalled by that PID::

    server = RedisServer().start()
    server.url        # "redis://127.0.0.1:<port>/0"
    server.pid        # the redis-server process
    server.kill()     # SIGKILL, reaped: the port then refuses connections
    server.restart()  # a fresh, empty server on the same port, waits until it answers PING
    server.stop()     # SIGTERM (then SIGKILL after a grace), reaped; idempotent

In pytest, :func:`session_redis` gives the session's one server and stops it when the session
ends (``config.add_cleanup``: on a normal end, on failures and on Ctrl-C). A module declares
the fixture with::

    @pytest.fixture(scope="session")
    def redis_server(pytestconfig: pytest.Config) -> RedisServer:
        return session_redis(pytestconfig)

This module also defines that ``redis_server`` fixture itself, so listing it in
``pytest_plugins`` (``pytest_plugins = ["support.redis_server"]`` in tests/conftest.py) makes it
available everywhere.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from rerank_plugins.serve import free_port

__all__ = ["RedisServer", "RedisUnavailable", "free_port", "redis_server", "session_redis"]

_PLUGIN = "rerank-redis-server"
_PR_SET_PDEATHSIG = 1


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or did not start."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1; see the module docstring."""

    def __init__(self, port: int | None = None, *, executable: str | None = None) -> None:
        found = executable or shutil.which("redis-server")
        if not found:
            raise RedisUnavailable(
                "redis-server is not installed: apt-get install -y redis-server "
                "(tests/run.sh installs it)"
            )
        self.executable = found
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="rerank-redis-"))
        self.log_path = self._dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r}, pid={self.pid}, running={self.running})"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Spawn the server and wait until it answers PING (a no-op when it runs)."""
        if self.running:
            return self
        self._dir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # prctl only: no locks, no imports
        )
        end = time.monotonic() + timeout
        while not _ping(self.port):
            if self._proc.poll() is not None:
                raise RedisUnavailable(
                    f"redis-server exited with {self._proc.returncode}: {self.log_tail()}"
                )
            if time.monotonic() > end:
                self.stop()
                raise RedisUnavailable(f"redis-server did not answer within {timeout:g}s")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL the server by its PID and reap it: the port refuses connections after."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self, timeout: float = 20.0) -> RedisServer:
        """Kill the server if it runs and start an empty one on the same port."""
        self.kill()
        self._proc = None
        self.restarts += 1
        return self.start(timeout)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL after ``grace``; reaped. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def session_redis(config: pytest.Config) -> RedisServer:
    """The session's redis-server, started on first use, stopped when the session ends.

    A missing ``redis-server`` fails the test (CI must not pass with these tests skipped).
    """
    server = config.pluginmanager.get_plugin(_PLUGIN)
    if server is None:
        try:
            server = RedisServer().start()
        except RedisUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        config.pluginmanager.register(server, _PLUGIN)
        # add_cleanup runs at the session's very end, also after Ctrl-C; atexit if pytest is
        # torn down some other way (PDEATHSIG covers a killed pytest).
        config.add_cleanup(server.cleanup)
        atexit.register(server.cleanup)
    assert isinstance(server, RedisServer)
    if not server.running:  # a test killed it and did not restart it
        server.restart()
    return server


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> Any:
    """The session's :class:`RedisServer`; a test that kills it restarts it before it ends."""
    return session_redis(pytestconfig)
