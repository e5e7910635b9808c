"""Scale out on existing engines: N vLLM replicas behind vllm-router, or one data-parallel server.

``rerank-cluster MODEL --replicas N`` starts N servers exactly as ``rerank-serve`` would (same
flags, template and environment, each on a free loopback port) and `vllm-router
<https://pypi.org/project/vllm-router/>`_ in front of them, waits until the router answers, and
prints ``RERANK_BASE_URL`` (the router). ``rerank-cluster MODEL --data-parallel-size N`` starts
one server with ``--data-parallel-size N`` (N engines in one server, no router). Ctrl-C or
SIGTERM stops everything by process group; the processes also get SIGKILL if ``rerank-cluster``
itself dies (Linux).

vllm-router 0.1.17 passes ``/v2/rerank`` (the client's default route) and ``/score`` to the
workers; ``/rerank`` fails through it and ``/v1/rerank`` is rewritten into a 404. With
``--policy consistent_hash`` and the client's ``routing_header="X-Session-ID"`` the same query
goes to the same replica.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from rerank_plugins.serve import (
    DEFAULT_STARTUP_TIMEOUT,
    ServeConfig,
    ServeError,
    VLLMServer,
    stop_servers,
)
from rerank_plugins.serve_process import (
    ready_unless_stopped,
    signal_group,
    spawn_logged,
    stop_on_signals,
)

__all__ = [
    "POLICIES",
    "ClusterError",
    "RouterConfig",
    "RouterProcess",
    "ServerCluster",
    "find_router",
    "main",
    "router_command",
]

# vllm-router 0.1.17's --policy choices (kv_aware needs KV events a pooling model never sends).
POLICIES: tuple[str, ...] = (
    "round_robin",
    "consistent_hash",
    "random",
    "power_of_two",
    "cache_aware",
    "sticky_least_loaded",
)
ROUTER_STOP_GRACE = 5.0


class ClusterError(ServeError):
    """A replica or the router could not be started, did not become healthy, or exited."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_router(explicit: str | None = None) -> str:
    """The ``vllm-router`` executable to run.

    ``explicit``, else env ``RERANK_VLLM_ROUTER``, else the one next to this Python (a venv's
    bin), else the first on PATH.
    """
    candidates = [explicit, os.environ.get("RERANK_VLLM_ROUTER")]
    candidates.append(str(Path(sys.executable).parent / "vllm-router"))
    candidates.append(shutil.which("vllm-router"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise ClusterError(
        "vllm-router not found: `pip install vllm-router` (0.1.17) into this environment, or "
        "pass --router PATH (env RERANK_VLLM_ROUTER)"
    )


@dataclass(frozen=True)
class RouterConfig:
    """How to run vllm-router in front of the replicas.

    ``health_check_interval`` (s) is how quickly the router notices a dead replica by itself;
    a request that hits a dead replica in between is retried on another one by the router
    (``retries``; its circuit breaker then keeps that replica out).
    """

    policy: str = "round_robin"
    host: str = "127.0.0.1"
    port: int | None = None
    executable: str | None = None
    health_check_interval: int = 2
    retries: int = 3
    request_timeout: int = 600
    extra_args: tuple[str, ...] = ()
    log_path: str | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ClusterError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))


def router_command(cfg: RouterConfig, workers: Sequence[str], *, metrics_port: int) -> list[str]:
    """The vllm-router command line for ``workers`` (base URLs); ``cfg.port`` must be set."""
    if cfg.port is None:
        raise ClusterError("the router port is not resolved yet")
    return [
        find_router(cfg.executable),
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--policy", cfg.policy,
        "--worker-urls", *workers,
        # The workers are started together with the router: check them every second.
        "--worker-startup-timeout-secs", str(int(cfg.startup_timeout)),
        "--worker-startup-check-interval", "1",
        "--health-check-interval-secs", str(cfg.health_check_interval),
        "--health-failure-threshold", "1",
        "--retry-max-retries", str(cfg.retries),
        "--request-timeout-secs", str(cfg.request_timeout),
        # Its default 29000 collides between two routers on one machine.
        "--prometheus-port", str(metrics_port),
        "--prometheus-host", "127.0.0.1",
        *cfg.extra_args,
    ]  # fmt: skip


class RouterProcess:
    """vllm-router as a child process: ``start``, ``wait_ready``, ``stop`` (by process group)."""

    def __init__(self, cfg: RouterConfig, workers: Sequence[str]) -> None:
        port = cfg.port if cfg.port is not None else _free_port(cfg.host)
        self.config = dataclasses.replace(cfg, port=port)
        self.workers = list(workers)
        self.metrics_port = _free_port("127.0.0.1")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._tmp_log: str | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the router: what clients are given."""
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.config.port}"

    @property
    def pid(self) -> int | None:
        """PID (and process group id) of the router, None before ``start``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> str | None:
        """Where the router's output goes."""
        return self.config.log_path or self._tmp_log

    @property
    def command(self) -> list[str]:
        """The router's command line."""
        return router_command(self.config, self.workers, metrics_port=self.metrics_port)

    def is_running(self) -> bool:
        """Whether the router process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RouterProcess:
        """Spawn the router and return at once (from a long-lived thread: see PDEATHSIG)."""
        if self._proc is not None:
            raise ClusterError("the router was already started")
        cmd = self.command
        path = self.config.log_path
        if path is None:
            fd, path = tempfile.mkstemp(prefix="rerank-router-", suffix=".log")
            os.close(fd)
            self._tmp_log = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._log = open(path, "ab")  # noqa: SIM115  (lives as long as the router)
        try:
            self._proc = spawn_logged(cmd, self._log)
        except OSError as exc:
            raise ClusterError(f"cannot start vllm-router {cmd[0]!r}: {exc}") from exc
        return self

    def wait_ready(self, timeout: float | None = None) -> RouterProcess:
        """Poll the router's ``GET /health`` until 200 (it binds once the workers are up)."""
        if self._proc is None:
            raise ClusterError("start() the router before waiting for it")
        limit = self.config.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ClusterError(
                        f"vllm-router exited with code {code} before it was ready",
                        log_tail=self.log_tail(),
                        log_path=self.log_path,
                        returncode=code,
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{self.base_url}/health").status_code == 200:
                        return self
                if time.monotonic() >= deadline:
                    raise ClusterError(
                        f"vllm-router did not answer 200 on /health within {limit:.0f} s",
                        log_tail=self.log_tail(),
                        log_path=self.log_path,
                    )
                time.sleep(0.25)

    def terminate(self) -> None:
        """Send SIGTERM to the router's process group without waiting."""
        if self._proc is not None and self._proc.poll() is None:
            signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, grace: float = ROUTER_STOP_GRACE) -> int | None:
        """Stop the router's process group (SIGTERM, SIGKILL after ``grace`` s); idempotent."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        signal_group(proc.pid, signal.SIGKILL)  # anything left in its group
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the router's log."""
        path = self.log_path
        if not path or not os.path.exists(path):
            return ""
        lines = Path(path).read_bytes()[-128 * 1024 :].decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])


class ServerCluster:
    """N replicas of one :class:`ServeConfig` behind vllm-router (``replicas >= 1``).

    ``start`` spawns every replica and the router at once and returns; ``wait_ready`` waits for
    all of them; ``stop`` stops the router, then all replicas together. Usable as a context
    manager. Each replica gets its own free port (``serve.port`` is ignored) and, when
    ``serve.log_path`` is set, its own log ``<log_path>.<i>``.
    """

    def __init__(self, serve: ServeConfig, replicas: int = 2, router: RouterConfig | None = None):
        if replicas < 1:
            raise ClusterError(f"replicas must be at least 1, got {replicas}")
        self.serve = serve
        self.router_config = router or RouterConfig(startup_timeout=serve.startup_timeout)
        self.replicas: list[VLLMServer] = []
        for i in range(replicas):
            log = f"{serve.log_path}.{i}" if serve.log_path else None
            self.replicas.append(VLLMServer(dataclasses.replace(serve, port=None, log_path=log)))
        self.router: RouterProcess | None = None

    @property
    def base_url(self) -> str:
        """The router's URL: what clients are given."""
        if self.router is None:
            raise ClusterError("the cluster has not been started")
        return self.router.base_url

    @property
    def model_name(self) -> str:
        """The model name clients send."""
        return self.serve.model_name

    def start(self) -> ServerCluster:
        """Spawn all replicas and the router; return at once."""
        try:
            for server in self.replicas:
                server.start()
            workers = [server.base_url for server in self.replicas]
            self.router = RouterProcess(self.router_config, workers).start()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float | None = None) -> ServerCluster:
        """Wait until every replica and the router answer ``/health``; stop all on failure."""
        if self.router is None:
            raise ClusterError("start() the cluster before waiting for it")
        limit = self.serve.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            for server in self.replicas:
                server.wait_ready(max(1.0, deadline - time.monotonic()))
            self.router.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the router, then every replica (signalled together); idempotent."""
        if self.router is not None:
            self.router.stop()
        stop_servers(self.replicas)

    def __enter__(self) -> ServerCluster:
        self.start()
        return self.wait_ready()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rerank-cluster",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="Arguments after -- are passed to every vLLM server unchanged.",
        allow_abbrev=False,
    )
    p.add_argument("model", help="model directory or hub id")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--replicas", type=int, help="N servers behind vllm-router")
    mode.add_argument(
        "--data-parallel-size", type=int, help="one server with N engines (no router)"
    )
    p.add_argument("--policy", choices=POLICIES, default="round_robin")
    p.add_argument("--host", default="127.0.0.1", help="the router's (or DP server's) address")
    p.add_argument("--port", type=int, default=None, help="the router's port (default: free)")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--python", default=None, help="Python with vLLM (env RERANK_VLLM_PYTHON)")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--router", default=None, help="vllm-router executable (default: found)")
    p.add_argument("--log-dir", default=None, help="server and router logs go here")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``rerank-cluster``: start, print ``RERANK_BASE_URL``, stop everything on a signal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    dp = args.data_parallel_size
    try:
        if (args.replicas or dp or 0) < 1:
            raise ClusterError("--replicas and --data-parallel-size must be at least 1")
        if dp is not None:
            extra = ["--data-parallel-size", str(dp), *extra]
        serve = ServeConfig(
            model=args.model,
            served_model_name=args.served_model_name,
            python=args.python,
            # A DP server is what clients reach; replicas stay on loopback behind the router.
            host=args.host if dp is not None else "127.0.0.1",
            port=args.port if dp is not None else None,
            max_model_len=args.max_model_len,
            extra_args=tuple(extra),
            log_path=str(log_dir / "vllm.log") if log_dir else None,
            cache_dir=args.cache_dir,
            startup_timeout=args.timeout,
        )
        if dp is not None:
            target: ServerCluster | VLLMServer = VLLMServer(serve)
        else:
            router = RouterConfig(
                policy=args.policy,
                host=args.host,
                port=args.port,
                executable=find_router(args.router),
                log_path=str(log_dir / "router.log") if log_dir else None,
                startup_timeout=args.timeout,
            )
            target = ServerCluster(serve, args.replicas, router)
        return _run(target, serve)
    except ServeError as exc:
        print(f"rerank-cluster: {exc}", file=sys.stderr)
        return 1


def _processes(target: ServerCluster | VLLMServer) -> list[tuple[str, int | None, bool]]:
    """(name, pid, alive) of every process ``target`` runs."""
    if isinstance(target, VLLMServer):
        return [("vLLM", target.pid, target.is_running())]
    out = [(f"replica {i}", s.pid, s.is_running()) for i, s in enumerate(target.replicas)]
    if target.router is not None:
        out.append(("vllm-router", target.router.pid, target.router.is_running()))
    return out


def _run(target: ServerCluster | VLLMServer, serve: ServeConfig) -> int:
    with stop_on_signals(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as stop:
        try:
            target.start()  # from the main thread: the children's PDEATHSIG is tied to it
            for name, pid, _ in _processes(target):
                print(f"rerank-cluster: started {name} (pid {pid})")
            sys.stdout.flush()
            if ready_unless_stopped(target.wait_ready, stop):
                print(f"RERANK_BASE_URL={target.base_url}")
                print(f"RERANK_MODEL={serve.model_name}")
                print("rerank-cluster: ready; Ctrl-C stops everything")
                sys.stdout.flush()
            reported: set[str] = set()
            while not stop.is_set():
                procs = _processes(target)
                for name, pid, alive in procs:
                    if not alive and name not in reported:
                        reported.add(name)
                        print(f"rerank-cluster: {name} (pid {pid}) exited", file=sys.stderr)
                # The router fails over while one replica lives; without it nothing is served.
                vllm_alive = any(alive for name, _, alive in procs if name != "vllm-router")
                router_dead = any(not alive for name, _, alive in procs if name == "vllm-router")
                if router_dead or not vllm_alive:
                    print("rerank-cluster: nothing left to serve; stopping", file=sys.stderr)
                    return 1
                stop.wait(0.5)
            return 0
        finally:
            target.stop()


if __name__ == "__main__":
    raise SystemExit(main())
