"""The ``rerank-evaluate`` command (also ``python -m rerank_plugins.eval``).

Arguments in, the report out; the work is :mod:`.run`'s, the report :mod:`.report`'s.

Usage::

    rerank-evaluate DATA --base-url http://127.0.0.1:8000 [--model NAME] [--depth 100]
        [--instruction A --instruction B] [--prompt-mode auto] [--out DIR]
    rerank-evaluate --qrels FILE --run A --run B        # compare existing runs, no server

``DATA`` is a set's name (``medquad-liveqa``, ``xquad-zh``, ``xquad-en``, ``eval_en``; see
:mod:`.data` for where names are looked up) or a folder. The API key comes from the
environment only (``RERANK_API_KEY``, or the variable named by ``--api-key-env``), never from
the command line, where other users of the machine can read it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ..config import PROMPT_MODES
from .metrics import GAINS, Gain
from .report import ROUNDS, RerankSetting, write_runs
from .run import compare_runs, evaluate_reranking

__all__ = ["main"]


# Client options the command passes on when given: (option name, type, help).
_CLIENT_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("max_batch_size", int, "documents per request (client option)"),
    ("max_concurrency", int, "requests in flight per query"),
    (
        "max_connections",
        int,
        "requests in flight at the server, across queries (client option, default 16)",
    ),
    ("timeout", float, "seconds per request (client option)"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rerank-evaluate",
        description="Does reranking help on my data? BM25 vs BM25 + rerank with 95% "
        "bootstrap intervals, a paired comparison and a verdict.",
    )
    p.add_argument(
        "data",
        nargs="?",
        help="a set's name (medquad-liveqa, xquad-zh, xquad-en, eval_en), a BEIR folder "
        "(corpus.jsonl[.gz], queries.jsonl, qrels/*.tsv) or a folder in the package's layout "
        "(qrels.tsv)",
    )
    p.add_argument("--split", help="BEIR qrels split (default: test, else the only one)")
    p.add_argument(
        "--base-url",
        default=os.environ.get("RERANK_BASE_URL"),
        help="the rerank server (default: env RERANK_BASE_URL)",
    )
    p.add_argument(
        "--model",
        default=os.environ.get("RERANK_MODEL"),
        help="served model name (default: env RERANK_MODEL, else the server's first)",
    )
    p.add_argument(
        "--api-key-env",
        default="RERANK_API_KEY",
        help="environment variable holding the API key (default RERANK_API_KEY); the key is "
        "never taken from the command line",
    )
    p.add_argument(
        "--depth", "-k", type=int, default=100, help="candidates reranked per query (default 100)"
    )
    p.add_argument(
        "--instruction",
        action="append",
        help="instruction for instruction-following rerankers; repeat to compare settings",
    )
    p.add_argument(
        "--prompt-mode",
        action="append",
        choices=PROMPT_MODES,
        help="client prompt mode (default auto); repeat to compare modes",
    )
    p.add_argument("--first-stage", help="a TREC run giving the candidates instead of BM25")
    p.add_argument("--qrels", help="TREC qrels, with --run and no DATA: compare runs only")
    p.add_argument("--run", action="append", help="a TREC run to compare (with --qrels)")
    p.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    p.add_argument(
        "--parallel",
        type=int,
        help="at most N queries in flight (default: all; the client's pool bounds the requests)",
    )
    for name, kind, help_text in _CLIENT_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=help_text)
    p.add_argument(
        "--gain",
        choices=GAINS,
        default="linear",
        help="nDCG gain: linear (trec_eval, default) or exponential (2^grade - 1)",
    )
    p.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"bootstrap resamples (default {ROUNDS})"
    )
    p.add_argument("--out", help="folder for TREC run files and summary.json")
    p.add_argument("--json", action="store_true", help="print summary.json instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command; returns the exit code (0 done, 2 usage, 1 data or server error)."""
    from ..errors import RerankError

    out = stdout if stdout is not None else sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    gain: Gain = args.gain
    try:
        if args.data is None:
            if not (args.qrels and args.run):
                parser.error("give DATA, or --qrels with two or more --run files")
            evaluation = compare_runs(
                args.qrels, args.run, depth=args.depth, gain=gain, rounds=args.rounds
            )
            if args.out:
                write_runs(evaluation.systems, Path(args.out), evaluation)
        else:
            if not args.base_url:
                parser.error("no server: pass --base-url or set RERANK_BASE_URL")
            instructions: list[str | None] = list(args.instruction or [None])
            modes: list[str | None] = list(args.prompt_mode or [None])
            settings = [RerankSetting(i, m) for i, m in itertools.product(instructions, modes)]
            options: dict[str, Any] = {}
            for name, _, _ in _CLIENT_OPTIONS:
                if getattr(args, name) is not None:
                    options[name] = getattr(args, name)
            evaluation = evaluate_reranking(
                args.data,
                base_url=args.base_url,
                model=args.model,
                api_key=os.environ.get(args.api_key_env) or None,
                settings=settings,
                depth=args.depth,
                split=args.split,
                first_stage=args.first_stage,
                max_queries=args.max_queries,
                parallel=args.parallel,
                gain=gain,
                out_dir=args.out,
                progress=not args.no_progress,
                rounds=args.rounds,
                client_options=options,
            )
    except (ValueError, OSError, RerankError) as exc:
        print(f"rerank-evaluate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out.write(json.dumps(evaluation.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(evaluation.text() + "\n")
    return 0
