"""The evaluation runner: a first stage, the reranker over its candidates, the scoring.

The first stage is BM25 or a given run; every system is scored with bootstrap intervals and
paired comparisons.

Each query is one client call; the calls of all queries are in flight together and the
client's connection pool (``max_connections``) bounds the requests that reach the server.
:func:`evaluate_reranking` runs the async runner on a private I/O loop
(:mod:`rerank_plugins._loop`), so it works from plain code and inside a running loop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from .._loop import IOLoop
from .data import EvalSet, load_collection, read_trec_qrels
from .languages import LANGUAGE_NAMES, cjk_share, model_reads, text_language
from .metrics import Gain, evaluate_per_query
from .report import CUTOFF, ROUNDS, Evaluation, Progress, RerankSetting, System, write_runs
from .stats import PairedComparison, bootstrap_mean, paired_bootstrap
from .trec import read_trec_run

__all__ = ["aevaluate_reranking", "compare_runs", "evaluate_reranking", "first_stage_bm25"]


def _evaluate(
    name: str,
    systems: list[System],
    qrels: Mapping[str, Mapping[str, int]],
    queries: list[str],
    depth: int,
    gain: Gain,
    rounds: int,
    notes: list[str] | None = None,
    *,
    reranked: bool = True,
) -> Evaluation:
    """The evaluation of ``systems``: each scored with bootstrap intervals, then compared.

    Every system after the first is compared with the first (the baseline), and each pair of
    them with each other.
    """
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
    comparisons: list[tuple[str, str, dict[str, PairedComparison]]] = []
    base, others = systems[0], systems[1:]
    pairs = [(base, s) for s in others] + list(itertools.combinations(others, 2))
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
    return Evaluation(
        name, queries, depth, gain, metrics, systems, comparisons, notes or [], reranked=reranked
    )


def first_stage_bm25(
    collection: EvalSet, queries: Sequence[str], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """BM25's top ``depth`` documents of each query (``rerank_plugins.retrieval``)."""
    from ..retrieval import BM25Index

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
    collection: EvalSet,
    candidates: Mapping[str, Sequence[tuple[str, float]]],
    setting: RerankSetting,
    parallel: int | None,
    progress: Progress,
) -> dict[str, list[tuple[str, float]]]:
    """One ``client.rerank`` call per query, all in flight at once (or ``parallel`` at a time)."""
    text_of = dict(zip(collection.doc_ids, collection.texts, strict=True))
    gate = asyncio.Semaphore(parallel) if parallel else None
    out: dict[str, list[tuple[str, float]]] = {}

    async def one(qid: str) -> None:
        docs = [d for d, _ in candidates[qid]]
        if docs:
            async with gate or contextlib.nullcontext():
                result = await client.rerank(
                    collection.queries[qid],
                    [text_of[d] for d in docs],
                    instruction=setting.instruction,
                )
            out[qid] = [(docs[item.index], float(item.score)) for item in result.items]
        else:
            out[qid] = []
        progress.update()

    await asyncio.gather(*(one(q) for q in candidates))
    return {q: out[q] for q in candidates}


def _candidates(
    collection: EvalSet,
    queries: Sequence[str],
    depth: int,
    first_stage: str | os.PathLike[str] | None,
) -> tuple[str, dict[str, list[tuple[str, float]]]]:
    """The first stage's name and its top ``depth`` of each query: BM25, or a given TREC run."""
    if first_stage is None:
        return "BM25", first_stage_bm25(collection, queries, depth)
    given = read_trec_run(first_stage)
    known = set(collection.doc_ids)
    return f"first stage ({Path(first_stage).name})", {
        q: [(d, float(-r)) for r, d in enumerate(given.get(q, [])[:depth]) if d in known]
        for q in queries
    }


async def aevaluate_reranking(
    data: str | os.PathLike[str] | EvalSet,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    settings: Sequence[RerankSetting] = (RerankSetting(),),
    depth: int = 100,
    split: str | None = None,
    first_stage: str | os.PathLike[str] | None = None,
    max_queries: int | None = None,
    parallel: int | None = None,
    gain: Gain = "linear",
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    rounds: int = ROUNDS,
    client_options: Mapping[str, Any] | None = None,
    stderr: TextIO | None = None,
) -> Evaluation:
    """BM25 (or ``first_stage``) then rerank through the server, for each of ``settings``.

    Returns an :class:`Evaluation`: BM25 first, then one system per setting, each with the
    pairs it scored per second. Every query is one client call, all in flight together: the
    client's ``max_connections`` (``client_options``) bounds the requests at the server;
    ``parallel`` bounds the queries in flight as well. Raises the client's ``RerankError``
    subclasses when the server fails. ``base_url``, ``model`` and ``api_key`` default to
    ``RERANK_BASE_URL``, ``RERANK_MODEL`` and ``RERANK_API_KEY``.
    :func:`evaluate_reranking` is the same without ``await``.
    """
    from ..client import AsyncRerankClient

    collection = data if isinstance(data, EvalSet) else load_collection(data, split)
    queries = collection.judged_queries()
    if max_queries is not None:
        queries = queries[:max_queries]
    if not queries:
        raise ValueError(f"{collection.name}: no query has a relevant judged document")
    first_name, candidates = _candidates(collection, queries, depth, first_stage)
    language = text_language(collection.texts)
    share = cjk_share(collection.texts)
    language_name = LANGUAGE_NAMES.get(language, language)
    notes = [
        f"first stage: {first_name}, top {depth} of {len(collection.doc_ids):,} documents; "
        f"corpus language by script: {language_name} ({share:.0%} CJK characters)"
    ]
    systems = [System(first_name, candidates, slug="bm25" if first_stage is None else "first")]
    for n, setting in enumerate(settings, start=1):
        kwargs = dict(client_options or {})
        if setting.prompt_mode is not None:
            kwargs["prompt_mode"] = setting.prompt_mode
        client = AsyncRerankClient(base_url, model, api_key, **kwargs)
        bar = Progress(len(queries), f"reranking ({setting.describe()})", stderr, enabled=progress)
        try:
            info = await client.server_info()
            started = time.perf_counter()
            ranked = await _rerank_all(client, collection, candidates, setting, parallel, bar)
            seconds = time.perf_counter() - started
        finally:
            await client.aclose()
        numbered = len(settings) > 1
        system = System(
            f"{first_name} + rerank" + (f" {n}" if numbered else ""),
            ranked,
            setting=setting,
            slug="rerank" + (f"-{n}" if numbered else ""),
            pairs=sum(len(c) for c in candidates.values()),
            seconds=seconds,
        )
        notes.append(
            f"{system.name}: {info.model} at {client.config.base_url}, {setting.describe()}, "
            f"prompt {info.prompt_mode}"
        )
        if not model_reads(f"{info.model} {info.model_root or ''}", language):
            notes.append(
                f"warning: {info.model} reads only English, and this corpus is {language_name} "
                f"({share:.0%} CJK characters): its scores say little about relevance here"
            )
        systems.append(system)
    name = f"{collection.name} ({collection.source})"
    evaluation = _evaluate(name, systems, collection.qrels, queries, depth, gain, rounds, notes)
    write_runs(systems, Path(out_dir) if out_dir is not None else None, evaluation)
    return evaluation


def evaluate_reranking(data: str | os.PathLike[str] | EvalSet, **options: Any) -> Evaluation:
    """:func:`aevaluate_reranking` for code without an event loop (or inside a running one).

    The runner runs on a private I/O loop in its own thread (the one the sync client uses),
    so a caller's running loop is neither needed nor disturbed.
    """
    io_loop = IOLoop("rerank-evaluate")
    try:
        return io_loop.block_on(aevaluate_reranking(data, **options))
    finally:
        io_loop.stop()


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
    name = f"qrels {Path(qrels_path).name}"
    return _evaluate(name, systems, qrels, queries, depth, gain, rounds, reranked=False)
