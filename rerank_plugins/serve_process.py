"""The vLLM server process ``rerank-serve`` manages: start, health-check, stop by PID.

:class:`VLLMServer` runs the command of :func:`rerank_plugins.serve_command.build_command` in a
session of its own (so its process group is its PID), with no process in between: vLLM's CLI
serves in the process it was started as (one API server; with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
on CPU the engine runs there too). It is stopped by process group (SIGTERM, SIGKILL after a
grace period), gets SIGKILL when the thread that started it dies (Linux), and servers still
running at interpreter exit are stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

import httpx

from rerank_plugins.serve_command import (
    ServeConfig,
    ServeError,
    build_command,
    build_env,
    resolve_config,
)

__all__ = [
    "LOG_TAIL_LINES",
    "STOP_GRACE_SECONDS",
    "VLLMServer",
    "ready_unless_stopped",
    "signal_group",
    "spawn_logged",
    "stop_on_signals",
    "stop_servers",
]

STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


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


@contextlib.contextmanager
def stop_on_signals(*signals: signal.Signals) -> Iterator[threading.Event]:
    """An event set by any of ``signals`` while the block runs (their handlers restored after)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ready_unless_stopped(wait_ready: Callable[[], object], stop: threading.Event) -> bool:
    """Run ``wait_ready`` in a thread, so that a signal can interrupt the start-up.

    True once it returned; False when ``stop`` was set first; its exception is raised here.
    """
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            wait_ready()
        except BaseException as exc:
            failure.append(exc)
            stop.set()

    waiter = threading.Thread(target=wait, name="rerank-wait-ready", daemon=True)
    waiter.start()
    while waiter.is_alive() and not stop.is_set():
        waiter.join(0.2)
    if failure:
        raise failure[0]
    return not stop.is_set()


def _health_ssl_context(cfg: ServeConfig) -> ssl.SSLContext:
    """The TLS context of the health check: no server verification, client cert if any.

    Not verifying is deliberate: the check goes to the process we just started, over the
    address we told it to bind (loopback by default), and sends nothing secret (/health needs
    no key). ``ssl_ca_certs`` is the CA of *client* certificates (uvicorn's meaning), so the CA
    of the server's own certificate may be one we were never told about.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cfg.ssl_client_cert is not None:
        cert, key = cfg.ssl_client_cert
        ctx.load_cert_chain(cert, key)
    return ctx


_live_servers: set[VLLMServer] = set()
_live_lock = threading.Lock()


def stop_servers(servers: Sequence[VLLMServer]) -> None:
    """Stop several servers at once: signal them all first, then wait for each."""
    for server in servers:
        server.terminate()
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    stop_servers(servers)


atexit.register(_stop_all_servers)


class VLLMServer:
    """One vLLM server process: ``start``, ``wait_ready``, ``stop``; or use it as a context manager.

    The process runs in a session of its own and is stopped by process group (SIGTERM, then
    SIGKILL after a grace period). On Linux it also receives SIGKILL when the thread that
    started it dies, so call ``start`` from a long-lived thread (the main one); servers still
    running at interpreter exit are stopped by an atexit hook.
    """

    def __init__(self, cfg: ServeConfig) -> None:
        self.config = cfg
        self._resolved: ServeConfig | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._work_dir: str | None = None
        self._log_path: str | None = cfg.log_path
        self._stop_lock = threading.Lock()
        self._ready = False
        self._failed = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def resolved(self) -> ServeConfig:
        """The config with python, device and port filled in (after ``start``)."""
        if self._resolved is None:
            raise ServeError("the server has not been started")
        return self._resolved

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` to give the client."""
        return self.resolved.base_url

    @property
    def model_name(self) -> str:
        """The model name clients send."""
        return self.config.model_name

    @property
    def pid(self) -> int | None:
        """PID of the vLLM process (also its process group id), None before ``start``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> str | None:
        """The file the server's stdout and stderr go to."""
        return self._log_path

    @property
    def command(self) -> list[str]:
        """The command line the server was started with."""
        return build_command(self.resolved)

    def is_running(self) -> bool:
        """Whether the vLLM process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> VLLMServer:
        """Spawn the server and return at once; ``wait_ready`` waits for ``/health``."""
        if self._proc is not None:
            raise ServeError("the server was already started")
        self._resolved = resolve_config(self.config)
        self._work_dir = tempfile.mkdtemp(prefix="rerank-serve-")
        if self._log_path is None:
            self._log_path = os.path.join(self._work_dir, "vllm.log")
        tmp_dir = os.path.join(self._work_dir, "tmp")
        os.makedirs(tmp_dir, exist_ok=True)
        cmd = build_command(self._resolved)
        env = build_env(self._resolved, tmp_dir=tmp_dir)
        Path(self._log_path).parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115  (lives as long as the server)
        try:
            self._proc = spawn_logged(cmd, self._log_file, env)
        except OSError as exc:
            self._cleanup_files()
            raise ServeError(f"cannot start vLLM with {cmd[0]!r}: {exc}") from exc
        with _live_lock:
            _live_servers.add(self)
        return self

    def wait_ready(self, timeout: float | None = None) -> VLLMServer:
        """Poll ``GET /health`` until it answers 200; raise ServeError (and stop) otherwise."""
        if self._proc is None:
            raise ServeError("start() the server before waiting for it")
        limit = self.config.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        url = f"{self.base_url}/health"
        verify: ssl.SSLContext | bool = True
        if self.resolved.uses_tls:
            verify = _health_ssl_context(self.resolved)
        with httpx.Client(timeout=5.0, trust_env=False, verify=verify) as http:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._fail(f"vLLM exited with code {code} before it was ready", code)
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        self._ready = True
                        return self
                if time.monotonic() >= deadline:
                    self._fail(f"vLLM did not answer 200 on {url} within {limit:.0f} s", None)
                time.sleep(0.5)

    def _fail(self, message: str, code: int | None) -> None:
        tail = self.log_tail(LOG_TAIL_LINES)
        self._failed = True  # keep a temporary log: the error message points to it
        self.stop()
        raise ServeError(
            f"{message} (model {self.config.model!r})",
            log_tail=tail,
            log_path=self._log_path,
            returncode=code,
        )

    def terminate(self) -> None:
        """Send SIGTERM to the server's process group without waiting (see ``stop``)."""
        if self._proc is not None and self._proc.poll() is None:
            signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Stop the server's process group (SIGTERM, SIGKILL after ``grace`` s); idempotent.

        Returns the process's exit code, None if it was never started.
        """
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
                _live_servers.discard(self)
            self._cleanup_files()
            return proc.returncode

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._work_dir is not None:
            shutil.rmtree(os.path.join(self._work_dir, "tmp"), ignore_errors=True)
            log_inside = self._log_path is not None and self._log_path.startswith(self._work_dir)
            # A temporary log is what explains a failed start: keep it then, else clean up.
            if not (log_inside and self._failed):
                shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the server's log ("" if there is none yet)."""
        if not self._log_path or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            lines: deque[bytes] = deque(fh, maxlen=n)
        return b"".join(lines).decode("utf-8", errors="replace").rstrip("\n")

    def __enter__(self) -> VLLMServer:
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

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VLLMServer(model={self.config.model!r}, pid={self.pid}, {state})"


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
