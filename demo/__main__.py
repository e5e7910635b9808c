"""``python -m demo``: start (or connect to) a reranker, then serve the Gradio app until stopped.

With no ``--base-url`` / ``RERANK_BASE_URL`` it starts vLLM through ``rerank_plugins.serve``
with the best model it can have here, and stops it on exit (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Sequence
from contextlib import ExitStack

from rerank_plugins import AsyncRerankClient
from rerank_plugins.serve import ServeConfig, ServeError, VLLMServer
from rerank_plugins.serve.run import run_until_signalled

from .backend import (
    Backend,
    ModelChoice,
    choose_model,
    describe_server,
    embedded_backend,
    log_choice,
    vllm_python,
)
from .corpora import Corpus, load_bundled
from .pipeline import IndexCache

logger = logging.getLogger("demo")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo",
        description="BM25 then rerank, in a browser. Without --base-url it starts vLLM itself.",
    )
    p.add_argument(
        "--base-url",
        default=os.environ.get("RERANK_BASE_URL"),
        help="an existing rerank server (default: env RERANK_BASE_URL; none: start vLLM here)",
    )
    p.add_argument(
        "--model",
        default=os.environ.get("RERANK_MODEL") or "auto",
        help="with --base-url: the served model name (default: the server's first). "
        "Without: auto (Qwen3-Reranker-0.6B if the hub is reachable and there is a GPU or "
        "many cores, else offline MiniLM), qwen3, minilm, or a model directory / hub id",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address the web UI binds (default 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=7860, help="web UI port (default 7860)")
    p.add_argument("--vllm-log", default=None, help="file for the embedded vLLM's log")
    p.add_argument(
        "--lang",
        choices=("auto", "en", "zh"),
        default="auto",
        help="interface language: en, zh (Chinese), or auto (default: the browser's)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve the client's Prometheus metrics on this port (default: off)",
    )
    return p


def _warm(cache: IndexCache, corpora: dict[str, Corpus]) -> None:
    for corpus in corpora.values():
        _, built_ms = cache.get(corpus.documents)
        logger.info("BM25 index of %s built in %.0f ms", corpus.label, built_ms or 0.0)


class _Demo:
    """What the launchers' run loop starts, waits for and stops: vLLM (unless --base-url) and
    the web UI, both closed by one ExitStack."""

    def __init__(self, args: argparse.Namespace, corpora: dict[str, Corpus], cache: IndexCache):
        self.args = args
        self.corpora = corpora
        self.cache = cache
        self.stack = ExitStack()
        self.server: VLLMServer | None = None
        self.choice: ModelChoice | None = None
        self.backend: Backend | None = None

    def start(self) -> None:
        if self.args.base_url:
            return
        python = vllm_python()
        self.choice = choose_model(self.args.model, python)
        logger.info(
            "starting vLLM with %s (%s); the first start takes ~30-60 s",
            self.choice.model,
            self.choice.reason,
        )
        self.server = VLLMServer(
            ServeConfig(
                model=self.choice.model,
                served_model_name=self.choice.served_name,
                python=python,
                host="127.0.0.1",
                log_path=self.args.vllm_log,
            )
        )
        self.stack.callback(_stop, self.server)
        self.server.start()  # on the main thread: vLLM's parent-death signal is tied to it
        logger.info("vLLM server pid %d, log %s", self.server.pid, self.server.log_path)

    def wait_ready(self) -> None:
        if self.server is None or self.choice is None:
            model = None if self.args.model == "auto" else self.args.model
            self.backend = describe_server(self.args.base_url, model)
            return
        self.server.wait_ready()
        self.backend = embedded_backend(self.server.base_url, self.choice, self.server.pid)

    def launch(self) -> None:
        from .app import build_demo, launch_options  # gradio is slow to import

        args, backend = self.args, self.backend
        assert backend is not None  # set by wait_ready, which on_ready follows
        log_choice(backend)
        client = AsyncRerankClient(
            base_url=backend.base_url,
            model=backend.model or None,
            timeout=300.0,
            metrics=True,  # shown in the Metrics tab; --metrics-port serves them
        )
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, addr=args.host)
            logger.info("Prometheus metrics: http://%s:%d/metrics", args.host, args.metrics_port)
        lang = None if self.args.lang == "auto" else self.args.lang
        blocks = build_demo(client, backend, corpora=self.corpora, cache=self.cache, lang=lang)
        self.stack.callback(blocks.close)
        blocks.launch(
            server_name=args.host,
            server_port=args.port,
            prevent_thread_lock=True,
            quiet=True,
            **launch_options(),
        )
        logger.info("demo ready: http://%s:%d (Ctrl-C stops it)", args.host, args.port)

    def stop(self) -> None:
        self.stack.close()


def _stop(server: VLLMServer) -> None:
    logger.info("stopping vLLM (pid %s)", server.pid)
    code = server.stop()
    logger.info("vLLM stopped (exit code %s)", code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until Ctrl-C or SIGTERM; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # bm25s sets its logger to DEBUG when imported: the handler's level keeps its chatter out.
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    # Gradio is slow to import: now, after argument errors and before vLLM takes the CPU.
    from . import app  # noqa: F401

    corpora = load_bundled()
    cache = IndexCache()
    # Index the bundled corpora while vLLM starts, so the first query is quick.
    threading.Thread(target=_warm, args=(cache, corpora), name="bm25-warm", daemon=True).start()
    demo = _Demo(args, corpora, cache)
    try:
        code = run_until_signalled(demo, on_ready=demo.launch)
    except (ServeError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("shutting down")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
