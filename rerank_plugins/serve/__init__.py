"""``rerank-serve``: start vLLM with the flags and prompt template a model's family needs.

The package never imports vLLM: the server runs in its own process, usually from another
virtual environment (``ServeConfig.python`` or env ``RERANK_VLLM_PYTHON``), and the client talks
to it over HTTP. Command-line use: ``rerank-serve MODEL`` (or ``python -m rerank_plugins.serve``);
``rerank-serve --list-families`` prints the families it knows.

Its modules, whose public names are re-exported here (``from rerank_plugins.serve import
ServeConfig, VLLMServer, ServeError, build_command``):

- ``config``: :class:`ServeConfig`, :class:`RouterConfig`, where vLLM's Python and vllm-router
  are; the family table itself is :mod:`rerank_plugins.families` (flags, template, listwise,
  images; a new family is one entry plus its template in ``rerank_plugins/templates/``);
- ``command``: the command lines and environment (``vllm serve MODEL ...``; pure);
- ``process``: the one managed child process (start, health check, stop by process group,
  parent-death signal, atexit stop, log) and :func:`free_port`;
- ``server``: :class:`VLLMServer` and :func:`resolve_config`; ``cluster``: vllm-router in front
  of replicas (also importable as :mod:`rerank_plugins.cluster`);
- ``cli`` and ``run``: ``rerank-serve``, ``rerank-cluster`` and the signal loop they share;
- ``vllm_ext``: code that runs inside vLLM's own Python (standard library only).

The server owns the prompt. A family that needs a prompt template (Qwen3-Reranker, mxbai-rerank
v2, bge-reranker-v2-gemma, ...) is served with the packaged template, so any client, this
package's or a third party's, sends plain ``{"query", "documents"}`` and gets the official
scores. ``prompt_mode="client"`` is the opt-out (no template; only a client that formats the
prompt itself gets correct scores). The prompt mode comes only from ``ServeConfig.prompt_mode``
/ ``--prompt-mode``: env ``RERANK_PROMPT_MODE`` is a client setting and does not change what is
served (it reaching one side but not the other made server and client disagree).

With an API key (``ServeConfig.api_key``; for ``rerank-serve`` env ``RERANK_API_KEY`` or
``--api-key-file``) every route except ``GET /health`` requires ``Authorization: Bearer <key>``:
vLLM's own ``--api-key`` guards only ``/v1``, ``/v2``, ``/inference`` and ``/cohere``, so the
server also loads :mod:`rerank_plugins.serve.vllm_ext.rerank_api_key_guard`. The key reaches the
server through its environment only, never its command line.
"""

from __future__ import annotations

from rerank_plugins.families import (
    FAMILIES,
    QWEN3_RERANKER_HF_OVERRIDES,
    Family,
    family_of,
    template_path,
)
from rerank_plugins.serve.cli import client_settings
from rerank_plugins.serve.cli import serve_main as main
from rerank_plugins.serve.command import build_command, build_env, vllm_entry_point
from rerank_plugins.serve.config import (
    API_KEY_ENV,
    API_KEY_GUARD_MIDDLEWARE,
    CPU_FLAGS,
    DEFAULT_STARTUP_TIMEOUT,
    ServeConfig,
    ServeError,
    default_cache_dir,
    vllm_ext_dir,
    vllm_python,
)
from rerank_plugins.serve.process import LOG_TAIL_LINES, STOP_GRACE_SECONDS, free_port, stop_servers
from rerank_plugins.serve.server import VLLMServer, detect_device, resolve_config

__all__ = [
    "API_KEY_ENV",
    "API_KEY_GUARD_MIDDLEWARE",
    "CPU_FLAGS",
    "DEFAULT_STARTUP_TIMEOUT",
    "FAMILIES",
    "LOG_TAIL_LINES",
    "QWEN3_RERANKER_HF_OVERRIDES",
    "STOP_GRACE_SECONDS",
    "Family",
    "ServeConfig",
    "ServeError",
    "VLLMServer",
    "build_command",
    "build_env",
    "client_settings",
    "default_cache_dir",
    "detect_device",
    "family_of",
    "free_port",
    "main",
    "resolve_config",
    "stop_servers",
    "template_path",
    "vllm_entry_point",
    "vllm_ext_dir",
    "vllm_python",
]
