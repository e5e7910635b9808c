"""Does reranking help on my data? BM25, then a reranker, scored with confidence intervals.

Command line (also the console script ``rerank-evaluate``)::

    python -m rerank_plugins.evaluate DATA --base-url http://127.0.0.1:8000 [--model NAME]
        [--depth 100] [--instruction A --instruction B] [--prompt-mode auto] [--out DIR]

``DATA`` is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), a folder
in the package's layout, or the name of a bundled set (``eval_en``). BM25 (the package's own,
``rerank_plugins.retrieval``) retrieves the top ``--depth`` candidates of each judged query, or
``--first-stage RUN`` gives them as a TREC run; the server reranks them. Without ``DATA``,
``--qrels FILE --run A --run B`` scores existing TREC runs against each other (no server).

The API key comes from the environment only (``RERANK_API_KEY``, or the variable named by
``--api-key-env``), never from the command line, where other users of the machine can read it.

It prints nDCG@10, MRR@10 and recall@10 / recall@depth of every system with 95% bootstrap
intervals over queries, the paired bootstrap of each difference, wins / losses / ties, and a
verdict line; it writes TREC run files and ``summary.json`` to ``--out``. Metrics follow
``trec_eval`` (linear gain; ``--gain exponential`` for 2^grade - 1).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import PROMPT_MODES
from .eval.data import Collection, load_collection, read_trec_qrels, read_trec_run, write_trec_run
from .eval.languages import LANGUAGE_NAMES, cjk_share, model_reads, text_language
from .eval.stats import Interval, PairedComparison, bootstrap_mean, paired_bootstrap
from .metrics import GAINS, Gain, evaluate_per_query

__all__ = [
    "Evaluation",
    "RerankSetting",
    "System",
    "aevaluate_reranking",
    "compare_runs",
    "evaluate_reranking",
    "main",
]

CUTOFF = 10
ROUNDS = 2000


@dataclass(frozen=True)
class RerankSetting:
    """One way of calling the reranker: an instruction and a prompt mode (None: the client's)."""

    instruction: str | None = None
    prompt_mode: str | None = None

    def describe(self) -> str:
        """``instruction "..."``, ``prompt mode client``, or ``defaults``."""
        parts = []
        if self.instruction is not None:
            parts.append(f"instruction {self.instruction!r}")
        if self.prompt_mode is not None:
            parts.append(f"prompt mode {self.prompt_mode}")
        return ", ".join(parts) or "client defaults"


@dataclass
class System:
    """One ranking of every query: its run, per-query metrics and mean intervals."""

    name: str
    run: dict[str, list[tuple[str, float]]]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    setting: RerankSetting | None = None
    run_file: Path | None = None
    slug: str = "run"
    """The run file's name without ``.trec``."""

    def ranked_ids(self) -> dict[str, list[str]]:
        """``{qid: [docid, ...]}``, best first."""
        return {q: [d for d, _ in ranked] for q, ranked in self.run.items()}


@dataclass
class Evaluation:
    """Everything one evaluation measured; :meth:`text` is what the command prints."""

    data: str
    queries: list[str]
    depth: int
    gain: Gain
    metrics: list[str]
    systems: list[System]
    comparisons: list[tuple[str, str, dict[str, PairedComparison]]]
    """(baseline name, system name, {metric: system - baseline})."""
    notes: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    reranked: bool = True
    """False when existing runs were compared (the verdict then names the runs)."""

    def system(self, name: str) -> System:
        """The system called ``name``."""
        for system in self.systems:
            if system.name == name:
                return system
        raise KeyError(name)

    @property
    def verdicts(self) -> list[str]:
        """One line per system compared with the baseline (the first system)."""
        baseline = self.systems[0].name
        lines = []
        key = f"ndcg@{CUTOFF}"
        for base, name, result in self.comparisons:
            if base != baseline:
                continue
            cmp = result[key]
            d = cmp.difference
            if self.reranked:
                what = {
                    "better": "reranking helps",
                    "worse": "reranking hurts",
                    "no significant difference": "no significant difference from reranking",
                }[cmp.direction]
                label = "" if name.endswith(" + rerank") else f" ({name})"
            else:
                what = {
                    "better": f"{name} is better than {base}",
                    "worse": f"{name} is worse than {base}",
                    "no significant difference": (
                        f"no significant difference between {name} and {base}"
                    ),
                }[cmp.direction]
                label = ""
            before = self.system(base).intervals[key].mean
            after = self.system(name).intervals[key].mean
            lines.append(
                f"verdict{label}: {what} on this data: nDCG@{CUTOFF} {before:.3f} -> {after:.3f}, "
                f"difference {d.mean:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}, paired "
                f"bootstrap over {len(self.queries)} queries; {cmp.wins} better, "
                f"{cmp.losses} worse, {cmp.ties} tied)"
            )
        return lines

    def text(self) -> str:
        """The report as printed by the command."""
        width = max(len(s.name) for s in self.systems) + 2
        labels = {m: _label(m) for m in self.metrics}
        out = [f"data: {self.data}", *self.notes]
        out.append(
            f"queries: {len(self.queries)} judged; figures are means with 95% bootstrap "
            f"intervals ({ROUNDS} resamples of the queries); nDCG gain: {self.gain}"
        )
        for system in self.systems:
            cells = "  ".join(f"{labels[m]} {system.intervals[m]}" for m in self.metrics)
            out.append(f"{system.name:{width}}{cells}")
        for base, name, result in self.comparisons:
            cells = "  ".join(
                f"{labels[m]} {c.difference.mean:+.3f} [{c.difference.low:+.3f}, "
                f"{c.difference.high:+.3f}]"
                for m, c in result.items()
            )
            ndcg = result[f"ndcg@{CUTOFF}"]
            out.append(f"{name} - {base}:  {cells}")
            out.append(
                f"  per query (nDCG@{CUTOFF}): {ndcg.wins} better, {ndcg.losses} worse, "
                f"{ndcg.ties} tied; p = {ndcg.p_value:.3f}"
            )
        out.extend(self.verdicts)
        if self.out_dir is not None:
            files = ", ".join(s.run_file.name for s in self.systems if s.run_file)
            out.append(f"runs written to {self.out_dir}: {files}, summary.json")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``summary.json`` holds)."""
        return {
            "data": self.data,
            "queries": len(self.queries),
            "depth": self.depth,
            "gain": self.gain,
            "notes": self.notes,
            "systems": {
                s.name: {
                    "setting": s.setting.describe() if s.setting else None,
                    "run_file": s.run_file.name if s.run_file else None,
                    **{
                        m: {"mean": i.mean, "ci95": [i.low, i.high]} for m, i in s.intervals.items()
                    },
                }
                for s in self.systems
            },
            "comparisons": [
                {
                    "baseline": base,
                    "system": name,
                    **{
                        m: {
                            "difference": c.difference.mean,
                            "ci95": [c.difference.low, c.difference.high],
                            "p_value": c.p_value,
                            "wins": c.wins,
                            "losses": c.losses,
                            "ties": c.ties,
                        }
                        for m, c in result.items()
                    },
                }
                for base, name, result in self.comparisons
            ],
            "verdicts": self.verdicts,
        }


def _label(metric: str) -> str:
    name, k = metric.split("@")
    return {"ndcg": "nDCG", "mrr": "MRR", "recall": "recall"}[name] + f"@{k}"


class Progress:
    """A tiny progress bar on stderr: redrawn in place on a terminal, a line per 25% otherwise."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, enabled: bool = True):
        self.total = max(total, 1)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._next_line = 0.0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done items and redraw."""
        self.done += n
        if not self.enabled:
            return
        share = self.done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / share - elapsed if share else 0.0
        bar = "#" * int(share * 30)
        text = (
            f"{self.desc} [{bar:<30}] {self.done}/{self.total} "
            f"{elapsed:,.0f}s elapsed, ~{eta:,.0f}s left"
        )
        if self._tty:
            self.stream.write("\r" + text + ("\n" if self.done >= self.total else ""))
            self.stream.flush()
        elif share >= self._next_line or self.done >= self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._next_line = (int(share * 4) + 1) / 4


def _score(
    systems: Sequence[System],
    qrels: Mapping[str, Mapping[str, int]],
    queries: Sequence[str],
    depth: int,
    gain: Gain,
    rounds: int,
) -> tuple[list[str], list[tuple[str, str, dict[str, PairedComparison]]]]:
    metrics = [f"ndcg@{CUTOFF}", f"mrr@{CUTOFF}", f"recall@{CUTOFF}"]
    if depth != CUTOFF:
        metrics.append(f"recall@{depth}")
    judged = {q: qrels[q] for q in queries}
    for system in systems:
        ranked = system.ranked_ids()
        at_cutoff = evaluate_per_query(ranked, judged, CUTOFF, gain=gain)
        at_depth = evaluate_per_query(ranked, judged, depth, gain=gain)
        system.per_query = {
            q: {**at_cutoff[q], f"recall@{depth}": at_depth[q][f"recall@{depth}"]} for q in queries
        }
        system.intervals = {
            m: bootstrap_mean([system.per_query[q][m] for q in queries], rounds=rounds)
            for m in metrics
        }
    comparisons = []
    base = systems[0]
    pairs = [(base, s) for s in systems[1:]]
    reranked = [s for s in systems[1:] if s.setting is not None]
    pairs += list(itertools.combinations(reranked, 2))
    for a, b in pairs:
        comparisons.append(
            (
                a.name,
                b.name,
                {
                    m: paired_bootstrap(
                        [a.per_query[q][m] for q in queries],
                        [b.per_query[q][m] for q in queries],
                        rounds=rounds,
                    )
                    for m in metrics
                },
            )
        )
    return metrics, comparisons


def _write_runs(systems: Sequence[System], out_dir: Path | None, evaluation: Evaluation) -> None:
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for system in systems:
        system.run_file = write_trec_run(out_dir / f"{system.slug}.trec", system.run, system.name)
    evaluation.out_dir = out_dir
    (out_dir / "summary.json").write_text(
        json.dumps(evaluation.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def first_stage_bm25(
    collection: Collection, queries: Sequence[str], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """BM25's top ``depth`` documents of each query (``rerank_plugins.retrieval``)."""
    from .retrieval import BM25Index

    index = BM25Index.from_documents(list(collection.texts))
    return {
        q: [
            (collection.doc_ids[h.index], h.score)
            for h in index.search(collection.queries[q], depth)
        ]
        for q in queries
    }


async def _rerank_all(
    client: Any,
    collection: Collection,
    candidates: Mapping[str, Sequence[tuple[str, float]]],
    setting: RerankSetting,
    parallel: int,
    progress: Progress,
) -> dict[str, list[tuple[str, float]]]:
    text_of = dict(zip(collection.doc_ids, collection.texts, strict=True))
    gate = asyncio.Semaphore(parallel)
    out: dict[str, list[tuple[str, float]]] = {}

    async def one(qid: str) -> None:
        docs = [d for d, _ in candidates[qid]]
        if not docs:
            out[qid] = []
            progress.update()
            return
        async with gate:
            result = await client.rerank(
                collection.queries[qid],
                [text_of[d] for d in docs],
                instruction=setting.instruction,
            )
        out[qid] = [(docs[item.index], float(item.score)) for item in result.items]
        progress.update()

    await asyncio.gather(*(one(q) for q in candidates))
    return {q: out[q] for q in candidates}


def _run_coroutine(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``factory()`` to completion, also from inside a running loop (Jupyter)."""

    async def wrapped() -> Any:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapped())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(wrapped())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="rerank-evaluate")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def aevaluate_reranking(
    data: str | os.PathLike[str] | Collection,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    settings: Sequence[RerankSetting] = (RerankSetting(),),
    depth: int = 100,
    split: str | None = None,
    first_stage: str | os.PathLike[str] | None = None,
    max_queries: int | None = None,
    parallel: int = 4,
    gain: Gain = "linear",
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    rounds: int = ROUNDS,
    client_options: Mapping[str, Any] | None = None,
    stderr: TextIO | None = None,
) -> Evaluation:
    """BM25 (or ``first_stage``) then rerank through the server, for each of ``settings``.

    Returns an :class:`Evaluation`: BM25 first, then one system per setting. Raises the
    client's ``RerankError`` subclasses when the server fails. ``base_url``, ``model`` and
    ``api_key`` default to ``RERANK_BASE_URL``, ``RERANK_MODEL`` and ``RERANK_API_KEY``.
    :func:`evaluate_reranking` is the same without ``await``.
    """
    from .client import AsyncRerankClient

    collection = data if isinstance(data, Collection) else load_collection(data, split)
    queries = collection.judged_queries()
    if max_queries is not None:
        queries = queries[:max_queries]
    if not queries:
        raise ValueError(f"{collection.name}: no query has a relevant judged document")
    if first_stage is not None:
        given = read_trec_run(first_stage)
        known = set(collection.doc_ids)
        candidates = {
            q: [(d, float(-r)) for r, d in enumerate(given.get(q, [])[:depth]) if d in known]
            for q in queries
        }
        first_name = f"first stage ({Path(first_stage).name})"
    else:
        candidates = first_stage_bm25(collection, queries, depth)
        first_name = "BM25"
    language = text_language(collection.texts)
    share = cjk_share(collection.texts)
    notes = [
        f"first stage: {first_name}, top {depth} of {len(collection.doc_ids):,} documents; "
        f"corpus language by script: {LANGUAGE_NAMES.get(language, language)} "
        f"({share:.0%} CJK characters)"
    ]
    systems = [
        System(first_name, dict(candidates), slug="bm25" if first_stage is None else "first")
    ]
    options = dict(client_options or {})
    for n, setting in enumerate(settings, start=1):
        kwargs = dict(options)
        if setting.prompt_mode is not None:
            kwargs["prompt_mode"] = setting.prompt_mode
        client = AsyncRerankClient(base_url, model, api_key, **kwargs)
        name = f"{first_name} + rerank" + (f" {n}" if len(settings) > 1 else "")

        async def run(client: Any = client, setting: RerankSetting = setting) -> tuple[Any, Any]:
            try:
                info = await client.server_info()
                bar = Progress(
                    len(queries), f"reranking ({setting.describe()})", stderr, enabled=progress
                )
                ranked = await _rerank_all(client, collection, candidates, setting, parallel, bar)
                return info, ranked
            finally:
                await client.aclose()

        info, ranked = await run()
        served = info.model
        notes.append(
            f"{name}: {served} at {client.config.base_url}, {setting.describe()}, prompt "
            f"{info.prompt_mode}"
        )
        if not model_reads(f"{served} {info.model_root or ''}", language):
            notes.append(
                f"warning: {served} reads only English, and this corpus is "
                f"{LANGUAGE_NAMES.get(language, language)} ({share:.0%} CJK characters): "
                "its scores say little about relevance here"
            )
        slug = "rerank" + (f"-{n}" if len(settings) > 1 else "")
        systems.append(System(name, ranked, setting=setting, slug=slug))
    metrics, comparisons = _score(systems, collection.qrels, queries, depth, gain, rounds)
    evaluation = Evaluation(
        f"{collection.name} ({collection.source})",
        queries,
        depth,
        gain,
        metrics,
        systems,
        comparisons,
        notes,
    )
    _write_runs(systems, Path(out_dir) if out_dir is not None else None, evaluation)
    return evaluation


def evaluate_reranking(data: str | os.PathLike[str] | Collection, **options: Any) -> Evaluation:
    """:func:`aevaluate_reranking` for code without an event loop (or inside a running one)."""
    return _run_coroutine(lambda: aevaluate_reranking(data, **options))  # type: ignore[no-any-return]


def compare_runs(
    qrels_path: str | os.PathLike[str],
    run_paths: Sequence[str | os.PathLike[str]],
    *,
    depth: int = 100,
    gain: Gain = "linear",
    rounds: int = ROUNDS,
) -> Evaluation:
    """Score existing TREC runs against the first one (no server, no corpus needed)."""
    if len(run_paths) < 2:
        raise ValueError("comparing runs needs at least two --run files")
    qrels = read_trec_qrels(qrels_path)
    queries = [q for q, j in qrels.items() if any(g > 0 for g in j.values())]
    systems = []
    for n, path in enumerate(run_paths):
        ranked = read_trec_run(path)
        run = {q: [(d, float(-r)) for r, d in enumerate(ranked.get(q, []))] for q in queries}
        systems.append(System(Path(path).name, run, slug=f"run-{n}"))
    # Every run after the first is compared with it, and the pairs among them with each other.
    for system in systems[1:]:
        system.setting = RerankSetting()
    metrics, comparisons = _score(systems, qrels, queries, depth, gain, rounds)
    for system in systems[1:]:
        system.setting = None
    return Evaluation(
        f"qrels {Path(qrels_path).name}",
        queries,
        depth,
        gain,
        metrics,
        systems,
        comparisons,
        reranked=False,
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
        help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv), a folder in the "
        "package's layout (qrels.tsv), or a bundled set name (eval_en)",
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
    p.add_argument("--parallel", type=int, default=4, help="queries in flight (default 4)")
    p.add_argument("--max-batch-size", type=int, help="documents per request (client option)")
    p.add_argument("--max-concurrency", type=int, help="requests in flight per query")
    p.add_argument("--timeout", type=float, help="seconds per request (client option)")
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
    from .errors import RerankError

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
                _write_runs(evaluation.systems, Path(args.out), evaluation)
        else:
            if not args.base_url:
                parser.error("no server: pass --base-url or set RERANK_BASE_URL")
            instructions: list[str | None] = list(args.instruction or [None])
            modes: list[str | None] = list(args.prompt_mode or [None])
            settings = [RerankSetting(i, m) for i, m in itertools.product(instructions, modes)]
            options: dict[str, Any] = {}
            for name in ("max_batch_size", "max_concurrency", "timeout"):
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


if __name__ == "__main__":
    raise SystemExit(main())
