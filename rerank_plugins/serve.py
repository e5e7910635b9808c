"""``rerank-serve``: start vLLM with the flags and prompt template a model's family needs.

The package never imports vLLM: the server runs in its own process, usually from another
virtual environment (``ServeConfig.python`` or env ``RERANK_VLLM_PYTHON``), and the client talks
to it over HTTP. Command-line use: ``rerank-serve MODEL`` (or ``python -m rerank_plugins.serve``);
``rerank-serve --list-families`` prints the families it knows.

The serving layer is three modules, re-exported here (``from rerank_plugins.serve import
ServeConfig, VLLMServer, ServeError, build_command`` keeps working):

- :mod:`rerank_plugins.families`: the table of reranker families (flags, template, listwise,
  images); a new family is one entry plus its template in ``rerank_plugins/templates/``;
- :mod:`rerank_plugins.serve_command`: :class:`ServeConfig` and the command line and environment
  it gives vLLM (``vllm serve MODEL ...``);
- :mod:`rerank_plugins.serve_process`: :class:`VLLMServer`, the process (health check, stop by
  process group, parent-death signal).

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
server also loads :mod:`rerank_plugins.vllm_ext.rerank_api_key_guard`. The key reaches the server
through its environment only, never its command line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from rerank_plugins.families import FAMILIES, Family, families_table, family_of
from rerank_plugins.serve_command import (
    _DEVICES,
    _PROMPT_MODES,
    _SSL_CERT_REQS,
    API_KEY_ENV,
    API_KEY_GUARD_MIDDLEWARE,
    CPU_FLAGS,
    DEFAULT_STARTUP_TIMEOUT,
    QWEN3_RERANKER_HF_OVERRIDES,
    FamilySpec,
    ServeConfig,
    ServeError,
    build_command,
    build_env,
    default_cache_dir,
    detect_device,
    free_port,
    resolve_config,
    template_path,
    vllm_entry_point,
    vllm_ext_dir,
)
from rerank_plugins.serve_process import (
    LOG_TAIL_LINES,
    STOP_GRACE_SECONDS,
    VLLMServer,
    ready_unless_stopped,
    stop_on_signals,
    stop_servers,
)

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
    "FamilySpec",
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
]

# -- command line -----------------------------------------------------------------------------

_DESCRIPTION = """\
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rerank-serve",
        description=_DESCRIPTION,
        epilog="Arguments after -- are passed to vLLM unchanged (not --api-key).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No prefix matching: "--api-key VALUE" must not be taken for --api-key-file.
        allow_abbrev=False,
    )
    p.add_argument(
        "model", nargs="?", help="model directory or hub id (e.g. Qwen/Qwen3-Reranker-0.6B)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--served-model-name", default=None)
    p.add_argument(
        "--prompt-mode",
        choices=_PROMPT_MODES,
        default="auto",
        help="auto (default): serve the template if the model family has one; server: require "
        "it; client: no template, clients must format the prompt (breaks third-party clients)",
    )
    p.add_argument("--python", default=None, help="Python with vLLM (env RERANK_VLLM_PYTHON)")
    p.add_argument("--device", choices=_DEVICES, default="auto")
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
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--enable-request-id-headers", action="store_true")
    p.add_argument("--ssl-keyfile", default=None, metavar="PATH")
    p.add_argument("--ssl-certfile", default=None, metavar="PATH", help="serve HTTPS")
    p.add_argument(
        "--ssl-ca-certs", default=None, metavar="PATH", help="CA file for client certificates"
    )
    p.add_argument(
        "--ssl-cert-reqs",
        type=int,
        choices=_SSL_CERT_REQS,
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
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
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


def main(argv: Sequence[str] | None = None) -> int:
    """``rerank-serve``: start the server, print its URL and model name, stop it on a signal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" goes to vLLM unchanged.
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = _parser()
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
            model=args.model,
            served_model_name=args.served_model_name,
            python=args.python,
            host=args.host,
            port=args.port,
            prompt_mode=args.prompt_mode,
            max_model_len=args.max_model_len,
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
            cache_dir=args.cache_dir,
            startup_timeout=args.timeout,
        )
        if args.print_command:
            print(shlex.join(build_command(resolve_config(cfg))))
            return 0
        return _run(cfg)
    except ServeError as exc:
        print(f"rerank-serve: {exc}", file=sys.stderr)
        return 1


def _announce_prompt(cfg: ServeConfig) -> None:
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


def _run(cfg: ServeConfig) -> int:
    with stop_on_signals(signal.SIGINT, signal.SIGTERM) as stop:
        server = VLLMServer(cfg)
        try:
            _announce_prompt(cfg)
            server.start()
            print(f"rerank-serve: starting {cfg.model} (pid {server.pid}, log {server.log_path})")
            sys.stdout.flush()
            if ready_unless_stopped(server.wait_ready, stop):
                resolved = server.resolved
                for line in client_settings(resolved):
                    print(line)
                if resolved.api_key:
                    print(
                        "rerank-serve: every route except GET /health requires the API key "
                        "(Authorization: Bearer; the key is not shown)"
                    )
                if resolved.ssl_cert_reqs == ssl.CERT_REQUIRED:
                    print(
                        "rerank-serve: clients must present a certificate signed by --ssl-ca-certs"
                    )
                print("rerank-serve: ready; Ctrl-C stops the server")
                sys.stdout.flush()
            while not stop.is_set():
                if not server.is_running():
                    print(
                        f"rerank-serve: vLLM exited unexpectedly\n{server.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
                stop.wait(0.5)
            return 0
        finally:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
