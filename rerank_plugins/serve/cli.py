"""The command lines ``rerank-serve`` (:func:`serve_main`) and ``rerank-cluster``.

Both parse their arguments into configs, then run on the one loop of
:mod:`rerank_plugins.serve.run`: start, print what clients need once ready, watch the
processes, stop everything on a signal.
"""

from __future__ import annotations

import argparse
import os
import shlex
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.families import FAMILIES, families_table
from rerank_plugins.serve.cluster import ServerCluster
from rerank_plugins.serve.command import build_command
from rerank_plugins.serve.config import (
    DEFAULT_STARTUP_TIMEOUT,
    DEVICES,
    POLICIES,
    SERVE_PROMPT_MODES,
    SSL_CERT_REQS,
    ClusterError,
    RouterConfig,
    ServeConfig,
    ServeError,
    find_router,
)
from rerank_plugins.serve.run import run_until_signalled
from rerank_plugins.serve.server import VLLMServer, resolve_config

__all__ = ["announce_prompt", "client_settings", "cluster_main", "serve_main"]


def _split_passthrough(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Our arguments, and those after ``--`` (for vLLM, unchanged)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        return args, []
    cut = args.index("--")
    return args[:cut], args[cut + 1 :]


# -- rerank-serve -----------------------------------------------------------------------------

_SERVE_DESCRIPTION = """\
Start a vLLM rerank server for MODEL and keep it running until Ctrl-C.

The server formats the prompt: a model whose family needs a prompt template (Qwen3-Reranker,
mxbai-rerank-v2, bge-reranker-v2-gemma, ...; by name or --family) is served with the packaged
template, so any client, including third-party ones, sends plain query and documents.
--list-families shows every family, its vLLM flags and template. --prompt-mode client is the
opt-out (no template; the client must format the prompt) and gives third-party clients wrong
scores.
RERANK_PROMPT_MODE in the environment does not change what is served.

API key: env RERANK_API_KEY or --api-key-file (never a command-line value); with one, every
route except GET /health requires "Authorization: Bearer <key>".
"""


def _new_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A parser with the settings of the vLLM servers both commands start."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No prefix matching: "--api-key VALUE" must not be taken for --api-key-file.
        allow_abbrev=False,
    )
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--python", default=None, help="Python with vLLM (env RERANK_VLLM_PYTHON)")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
    return p


def _server_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`ServeConfig` fields of the arguments :func:`_new_parser` adds."""
    return {
        "model": args.model,
        "served_model_name": args.served_model_name,
        "python": args.python,
        "max_model_len": args.max_model_len,
        "cache_dir": args.cache_dir,
        "startup_timeout": args.timeout,
    }


def _serve_parser() -> argparse.ArgumentParser:
    p = _new_parser(
        "rerank-serve",
        _SERVE_DESCRIPTION,
        "Arguments after -- are passed to vLLM unchanged (not --api-key).",
    )
    p.add_argument(
        "model", nargs="?", help="model directory or hub id (e.g. Qwen/Qwen3-Reranker-0.6B)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument(
        "--prompt-mode",
        choices=SERVE_PROMPT_MODES,
        default="auto",
        help="auto (default): serve the template if the model family has one; server: require "
        "it; client: no template, clients must format the prompt (breaks third-party clients)",
    )
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument(
        "--family",
        choices=("auto", *FAMILIES),
        default="auto",
        metavar="FAMILY",
        help="auto (default): recognised from the model name or path; else one of "
        "--list-families (e.g. qwen3-reranker for a renamed Qwen3-Reranker)",
    )
    p.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="file holding the API key (default: env RERANK_API_KEY; none: no key)",
    )
    # Refused with a message instead of "unrecognized argument": the value is not echoed.
    p.add_argument("--api-key", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    p.add_argument("--enable-request-id-headers", action="store_true")
    p.add_argument("--ssl-keyfile", default=None, metavar="PATH")
    p.add_argument("--ssl-certfile", default=None, metavar="PATH", help="serve HTTPS")
    p.add_argument(
        "--ssl-ca-certs", default=None, metavar="PATH", help="CA file for client certificates"
    )
    p.add_argument(
        "--ssl-cert-reqs",
        type=int,
        choices=SSL_CERT_REQS,
        default=None,
        help="client certificates: 0 none, 1 optional, 2 required (needs --ssl-ca-certs)",
    )
    p.add_argument(
        "--ssl-client-cert",
        nargs=2,
        default=None,
        metavar=("CERT", "KEY"),
        help="client certificate and key the health check presents (with --ssl-cert-reqs 2)",
    )
    p.add_argument("--log-path", default=None)
    p.add_argument("--print-command", action="store_true", help="print the vLLM command and exit")
    p.add_argument(
        "--list-families",
        action="store_true",
        help="print the reranker families (name patterns, vLLM flags, template) and exit",
    )
    return p


def _read_api_key(path: str | None) -> str | None:
    """The key from ``--api-key-file``, else env ``RERANK_API_KEY``, else None."""
    if path is not None:
        try:
            key = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServeError(f"cannot read --api-key-file {path!r}: {exc.strerror}") from None
        if not key:
            raise ServeError(f"--api-key-file {path!r} is empty")
        return key
    return os.environ.get("RERANK_API_KEY") or None


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``rerank-serve``: start the server, print its URL and model name, stop it on a signal."""
    argv, extra = _split_passthrough(argv)
    parser = _serve_parser()
    args = parser.parse_args(argv)
    if args.list_families:
        print(families_table())
        return 0
    if not args.model:
        parser.error("the following arguments are required: model")
    try:
        if args.api_key is not None or any(a.startswith("--api-key=") for a in argv):
            raise ServeError(
                "--api-key is not accepted: a key on the command line shows in `ps` and shell "
                "history; set env RERANK_API_KEY or pass --api-key-file PATH"
            )
        cfg = ServeConfig(
            **_server_settings(args),
            host=args.host,
            port=args.port,
            prompt_mode=args.prompt_mode,
            api_key=_read_api_key(args.api_key_file),
            device=args.device,
            family=args.family,
            enable_request_id_headers=args.enable_request_id_headers,
            ssl_keyfile=args.ssl_keyfile,
            ssl_certfile=args.ssl_certfile,
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=args.ssl_cert_reqs,
            ssl_client_cert=tuple(args.ssl_client_cert) if args.ssl_client_cert else None,
            extra_args=tuple(extra),
            log_path=args.log_path,
        )
        if args.print_command:
            print(shlex.join(build_command(resolve_config(cfg))))
            return 0
        return _serve(cfg)
    except ServeError as exc:
        print(f"rerank-serve: {exc}", file=sys.stderr)
        return 1


def announce_prompt(cfg: ServeConfig) -> None:
    """Say who formats the prompt; warn about the client opt-out and a misleading env var."""
    print(f"rerank-serve: {cfg.family_summary}")
    print(f"rerank-serve: {cfg.prompt_summary}")
    warning = cfg.client_prompt_warning
    if warning:
        print(f"rerank-serve: {warning}", file=sys.stderr)
    env_mode = os.environ.get("RERANK_PROMPT_MODE")
    mode = cfg.effective_prompt_mode
    if env_mode and env_mode != "auto" and mode != "client" and env_mode in ("client", "raw"):
        # Harmless for serving (ignored here), harmful for a client in this shell.
        print(
            f"rerank-serve: note: RERANK_PROMPT_MODE={env_mode} is set in this shell; it does "
            "not change this server, but a client reading it would format prompts itself and "
            "disagree with the server. Unset it for clients of this server.",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()


def client_settings(cfg: ServeConfig) -> list[str]:
    """The ``RERANK_*`` lines ``rerank-serve`` prints for clients (never the API key).

    Only settings that are right for this model: the URL and the name; the prompt mode only in
    the Qwen3-Reranker opt-out, where a client must format the prompt itself.
    """
    lines = [f"RERANK_BASE_URL={cfg.base_url}", f"RERANK_MODEL={cfg.model_name}"]
    if cfg.effective_prompt_mode == "client" and cfg.is_qwen3_reranker:
        lines.append("RERANK_PROMPT_MODE=client")
    return lines


def _serve(cfg: ServeConfig) -> int:
    server = VLLMServer(cfg)
    announce_prompt(cfg)

    def started() -> None:
        print(f"rerank-serve: starting {cfg.model} (pid {server.pid}, log {server.log_path})")
        sys.stdout.flush()

    def ready() -> None:
        resolved = server.resolved
        for line in client_settings(resolved):
            print(line)
        if resolved.api_key:
            print(
                "rerank-serve: every route except GET /health requires the API key "
                "(Authorization: Bearer; the key is not shown)"
            )
        if resolved.ssl_cert_reqs == ssl.CERT_REQUIRED:
            print("rerank-serve: clients must present a certificate signed by --ssl-ca-certs")
        print("rerank-serve: ready; Ctrl-C stops the server")
        sys.stdout.flush()

    def check() -> int | None:
        if server.is_running():
            return None
        print(f"rerank-serve: vLLM exited unexpectedly\n{server.log_tail()}", file=sys.stderr)
        return 1

    return run_until_signalled(server, on_started=started, on_ready=ready, check=check)


# -- rerank-cluster ---------------------------------------------------------------------------

_CLUSTER_DESCRIPTION = """\
Scale out on existing engines: N vLLM replicas behind vllm-router, or one data-parallel server.

rerank-cluster MODEL --replicas N starts N servers exactly as rerank-serve would (same flags,
template and environment, each on a free loopback port) and vllm-router in front of them, waits
until the router answers, and prints RERANK_BASE_URL (the router). rerank-cluster MODEL
--data-parallel-size N starts one server with --data-parallel-size N (N engines in one server,
no router). Ctrl-C or SIGTERM stops everything by process group; the processes also get
SIGKILL if rerank-cluster itself dies (Linux).
"""


def _cluster_parser() -> argparse.ArgumentParser:
    p = _new_parser(
        "rerank-cluster",
        _CLUSTER_DESCRIPTION,
        "Arguments after -- are passed to every vLLM server unchanged.",
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
    p.add_argument("--router", default=None, help="vllm-router executable (default: found)")
    p.add_argument("--log-dir", default=None, help="server and router logs go here")
    return p


def cluster_main(argv: Sequence[str] | None = None) -> int:
    """``rerank-cluster``: start, print ``RERANK_BASE_URL``, stop everything on a signal."""
    argv, extra = _split_passthrough(argv)
    args = _cluster_parser().parse_args(argv)
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
            **_server_settings(args),
            # A DP server is what clients reach; replicas stay on loopback behind the router.
            host=args.host if dp is not None else "127.0.0.1",
            port=args.port if dp is not None else None,
            extra_args=tuple(extra),
            log_path=str(log_dir / "vllm.log") if log_dir else None,
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
        return _cluster(target, serve)
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


def _cluster(target: ServerCluster | VLLMServer, serve: ServeConfig) -> int:
    reported: set[str] = set()

    def started() -> None:
        for name, pid, _ in _processes(target):
            print(f"rerank-cluster: started {name} (pid {pid})")
        sys.stdout.flush()

    def ready() -> None:
        print(f"RERANK_BASE_URL={target.base_url}")
        print(f"RERANK_MODEL={serve.model_name}")
        print("rerank-cluster: ready; Ctrl-C stops everything")
        sys.stdout.flush()

    def check() -> int | None:
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
        return None

    return run_until_signalled(target, on_started=started, on_ready=ready, check=check)
