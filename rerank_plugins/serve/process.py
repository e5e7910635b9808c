"""A server child process the launcher manages: start, wait until healthy, stop by process group.

:class:`ManagedProcess` is the one lifecycle behind :class:`~rerank_plugins.serve.VLLMServer`
and :class:`~rerank_plugins.serve.cluster.RouterProcess`. The child runs in a session of its
own (its process group is its PID) with no process in between; it is stopped by process group
(SIGTERM, SIGKILL after a grace period), gets SIGKILL when the thread that started it dies
(Linux), and processes still running at interpreter exit are stopped by an atexit hook. Its
output goes to a log file; a temporary one is removed on stop unless the start failed (the
error points to it).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

import httpx

from rerank_plugins.serve.config import ServeError

__all__ = [
    "LOG_TAIL_LINES",
    "STOP_GRACE_SECONDS",
    "ManagedProcess",
    "StartStop",
    "free_port",
    "signal_group",
    "spawn_logged",
    "stop_servers",
]

STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` (IPv4 or IPv6) right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux only).

    SIGKILL, not SIGTERM: vLLM 0.32 can hang on a SIGTERM that arrives during start-up
    (measured: stuck for minutes after "Enabled custom fusions"), and with the parent gone
    nobody is left to escalate.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        # Runs in the forked child; prctl was looked up before the fork.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return set_pdeathsig


def spawn_logged(
    cmd: Sequence[str], log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own, its output appended to ``log``.

    The child gets SIGKILL when the thread that spawned it dies (``_pdeathsig_preexec``), so
    a killed parent leaves no server behind; it is stopped by its process group otherwise.
    Raises ``OSError`` when ``cmd`` cannot be run.
    """
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    return subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_pdeathsig_preexec(),
    )


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def stop_servers(servers: Sequence[ManagedProcess]) -> None:
    """Stop several processes at once: signal them all first, then wait for each."""
    for server in servers:
        server.terminate()
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _stop_all_live() -> None:
    with _live_lock:
        live = list(_live)
    stop_servers(live)


atexit.register(_stop_all_live)


class StartStop:
    """``with x:`` starts ``x``, waits until it is ready and stops it (also if that fails)."""

    def start(self) -> Self:
        """Start and return at once."""
        raise NotImplementedError

    def wait_ready(self, timeout: float | None = None) -> Self:
        """Block until ready; raise (having stopped) if it cannot be."""
        raise NotImplementedError

    def stop(self) -> object:
        """Stop everything started; idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(StartStop):
    """One server process: ``start``, ``wait_ready``, ``stop``; or use it as a context manager.

    A subclass says what to run (:meth:`_command`) and where it answers (:attr:`base_url`);
    this class spawns it with its output in ``log_path`` (else a temporary log), polls
    ``GET /health`` until 200, and stops it by process group. Call ``start`` from a long-lived
    thread (the main one): on Linux the child gets SIGKILL when that thread dies.
    """

    kind: ClassVar[str] = "process"  # what messages call it: "vLLM", "vllm-router"
    error: ClassVar[type[ServeError]] = ServeError
    stop_grace: ClassVar[float] = STOP_GRACE_SECONDS
    poll_interval: ClassVar[float] = 0.5

    def __init__(self, *, log_path: str | None, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._work_dir: str | None = None
        self._log_path = log_path
        self._stop_lock = threading.Lock()
        self._ready = False
        self._failed = False

    # -- what a subclass says ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the process: what clients are given."""
        raise NotImplementedError

    def _command(self, work_dir: str) -> tuple[list[str], dict[str, str] | None]:
        """The command line and environment (None: inherited); ``work_dir`` is private to it."""
        raise NotImplementedError

    def _health_verify(self) -> ssl.SSLContext | bool:
        """What the health check verifies TLS with (plain HTTP: unused)."""
        return True

    def _describe(self) -> str:
        """What error messages add after the process kind, e.g. the model."""
        return ""

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the process (also its process group id), None before ``start``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> str | None:
        """The file the process's stdout and stderr go to."""
        return self._log_path

    def is_running(self) -> bool:
        """Whether the process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Spawn the process and return at once; ``wait_ready`` waits for ``/health``."""
        if self._proc is not None:
            raise self.error(f"the {self.kind} process was already started")
        self._work_dir = tempfile.mkdtemp(prefix=f"rerank-{self.kind.lower()}-")
        try:
            cmd, env = self._command(self._work_dir)
        except BaseException:
            self._cleanup_files()
            raise
        if self._log_path is None:
            self._log_path = os.path.join(self._work_dir, f"{self.kind.lower()}.log")
        Path(self._log_path).parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115  (lives as long as the process)
        try:
            self._proc = spawn_logged(cmd, self._log_file, env)
        except OSError as exc:
            self._cleanup_files()
            raise self.error(f"cannot start {self.kind} with {cmd[0]!r}: {exc}") from exc
        with _live_lock:
            _live.add(self)
        return self

    def wait_ready(self, timeout: float | None = None) -> Self:
        """Poll ``GET /health`` until it answers 200; raise (and stop) otherwise."""
        if self._proc is None:
            raise self.error(f"start() the {self.kind} process before waiting for it")
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        url = f"{self.base_url}/health"
        with httpx.Client(timeout=5.0, trust_env=False, verify=self._health_verify()) as http:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._fail(f"{self.kind} exited with code {code} before it was ready", code)
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        self._ready = True
                        return self
                if time.monotonic() >= deadline:
                    self._fail(f"{self.kind} did not answer 200 on {url} within {limit:.0f} s")
                time.sleep(self.poll_interval)

    def _fail(self, message: str, code: int | None = None) -> None:
        tail = self.log_tail(LOG_TAIL_LINES)
        self._failed = True  # keep a temporary log: the error message points to it
        self.stop()
        raise self.error(
            f"{message}{self._describe()}",
            log_tail=tail,
            log_path=self._log_path,
            returncode=code,
        )

    def terminate(self) -> None:
        """Send SIGTERM to the process group without waiting (see ``stop``)."""
        if self._proc is not None and self._proc.poll() is None:
            signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, grace: float | None = None) -> int | None:
        """Stop the process group (SIGTERM, SIGKILL after ``grace`` s); idempotent.

        Returns the process's exit code, None if it was never started.
        """
        grace = self.stop_grace if grace is None else grace
        with self._stop_lock:
            proc = self._proc
            if proc is None:
                return None
            if not self._ready:
                # A SIGTERM during vLLM's start-up may never be acted on: do not wait long.
                grace = min(grace, 5.0)
            if proc.poll() is None or _group_alive(proc.pid):
                signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                # Children that outlived the leader (GPU engine processes) go too.
                if _group_alive(proc.pid):
                    signal_group(proc.pid, signal.SIGKILL)
            with _live_lock:
                _live.discard(self)
            self._cleanup_files()
            return proc.returncode

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._work_dir is not None:
            log_inside = self._log_path is not None and self._log_path.startswith(self._work_dir)
            # A temporary log is what explains a failed start: keep it then (alone), else all.
            if log_inside and self._failed:
                for entry in Path(self._work_dir).iterdir():
                    if str(entry) != self._log_path:
                        shutil.rmtree(entry, ignore_errors=True)
            else:
                shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the process's log ("" if there is none yet)."""
        if not self._log_path or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            lines: deque[bytes] = deque(fh, maxlen=n)
        return b"".join(lines).decode("utf-8", errors="replace").rstrip("\n")

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"{type(self).__name__}(pid={self.pid}, {state})"
