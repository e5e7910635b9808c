"""Scale out on existing engines: N vLLM replicas behind vllm-router.

:class:`ServerCluster` starts N servers exactly as ``rerank-serve`` would (same flags, template
and environment, each on a free loopback port) and `vllm-router
<https://pypi.org/project/vllm-router/>`_ (:class:`RouterProcess`) in front of them; both are
:class:`~rerank_plugins.serve.process.ManagedProcess` children, stopped by process group, by an
atexit hook, and by SIGKILL if the thread that started them dies (Linux). ``rerank-cluster``
(:func:`rerank_plugins.serve.cli.cluster_main`) runs one from the command line.

vllm-router 0.1.17 passes ``/v2/rerank`` (the client's default route) and ``/score`` to the
workers; ``/rerank`` fails through it and ``/v1/rerank`` is rewritten into a 404. With
``--policy consistent_hash`` and the client's ``routing_header="X-Session-ID"`` the same query
goes to the same replica.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import ClassVar

from rerank_plugins.serve.command import router_command
from rerank_plugins.serve.config import ClusterError, RouterConfig, ServeConfig, ServeError
from rerank_plugins.serve.process import ManagedProcess, StartStop, free_port, stop_servers
from rerank_plugins.serve.server import VLLMServer

__all__ = ["RouterProcess", "ServerCluster"]


class RouterProcess(ManagedProcess):
    """vllm-router as a child process: ``start``, ``wait_ready``, ``stop`` (by process group)."""

    kind: ClassVar[str] = "vllm-router"
    error: ClassVar[type[ServeError]] = ClusterError
    stop_grace: ClassVar[float] = 5.0
    poll_interval: ClassVar[float] = 0.25

    def __init__(self, cfg: RouterConfig, workers: Sequence[str]) -> None:
        super().__init__(log_path=cfg.log_path, startup_timeout=cfg.startup_timeout)
        port = cfg.port if cfg.port is not None else free_port(cfg.host)
        self.config = dataclasses.replace(cfg, port=port)
        self.workers = list(workers)
        # Its own metrics listener: the default 29000 collides between two routers.
        self.metrics_port = free_port("127.0.0.1")

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the router: what clients are given."""
        return self.config.base_url

    @property
    def command(self) -> list[str]:
        """The router's command line."""
        return router_command(self.config, self.workers, metrics_port=self.metrics_port)

    def _command(self, work_dir: str) -> tuple[list[str], dict[str, str] | None]:
        return self.command, None


class ServerCluster(StartStop):
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
