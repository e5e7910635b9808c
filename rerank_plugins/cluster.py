"""``rerank_plugins.cluster``: the import path of the scale-out API, kept for existing code.

Everything lives in :mod:`rerank_plugins.serve.cluster` (the processes),
:mod:`rerank_plugins.serve.config` (:class:`RouterConfig`) and :mod:`rerank_plugins.serve.cli`
(``rerank-cluster``); ``python -m rerank_plugins.cluster`` still runs ``rerank-cluster``.
"""

from __future__ import annotations

from rerank_plugins.serve.cli import cluster_main as main
from rerank_plugins.serve.cluster import RouterProcess, ServerCluster
from rerank_plugins.serve.command import router_command
from rerank_plugins.serve.config import POLICIES, ClusterError, RouterConfig, find_router

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

if __name__ == "__main__":
    raise SystemExit(main())
