"""Throughput against a real vLLM server: the raw ceiling, our client, both adapters, the seed.

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
import requests
from common import TextMaker, load, percentile, summary

from rerank_plugins import AsyncRerankClient, RerankClient


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
    def __init__(self, base_url: str, model: str, quick: bool, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.quick = quick
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.api_key = api_key
        self.maker = TextMaker()
        models = httpx.get(f"{self.base_url}/v1/models", headers=self.headers, timeout=30).json()
        window = next(
            (m.get("max_model_len") for m in models.get("data", []) if m.get("id") == model), None
        )
        self.max_model_len = window
        # Short texts for a short window (MiniLM: 256 tokens), so no document needs cutting
        # (a cut costs our client a /tokenize per document); 40 words otherwise.
        small = window is not None and window <= 512
        self.doc_words = 16 if small else 40
        self.query_words = 5 if small else 8
        self.batch = 8  # documents per request (call) in the concurrent scenarios
        self.total_docs = 8 if quick else 128  # documents per concurrent run (16 requests)
        self.seq_calls = 2 if quick else 12  # 5-document calls per pattern per round
        self.tokens_per_doc: float | None = None

    def query(self) -> str:
        return self.maker.text(self.query_words)

    def docs(self, n: int) -> list[str]:
        return self.maker.docs(n, self.doc_words)

    # -- scenarios: each returns (latencies, docs, prompt tokens or None, seconds) ----------

    async def _concurrent(
        self, concurrency: int, one: Callable[[str, list[str]], Awaitable[int | None]]
    ) -> tuple[list[float], int, float | None, float]:
        n_requests = self.total_docs // self.batch
        work = [(self.query(), self.docs(self.batch)) for _ in range(n_requests)]
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
        return latencies, n_requests * self.batch, total, seconds

    async def ceiling(self, concurrency: int) -> Any:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as c:

            async def one(q: str, d: list[str]) -> int | None:
                body = json.dumps({"model": self.model, "query": q, "documents": d}).encode()
                r = await c.post(f"{self.base_url}/rerank", content=body, headers=self.headers)
                r.raise_for_status()
                data = r.json()
                assert len(data["results"]) == len(d)
                return int(data["usage"]["prompt_tokens"])

            await one(self.query(), self.docs(2))  # connect
            return await self._concurrent(concurrency, one)

    async def ours(self, concurrency: int) -> Any:
        client = AsyncRerankClient(self.base_url, model=self.model, api_key=self.api_key)
        try:
            await client.rerank(self.query(), self.docs(2))  # learn the server, connect

            async def one(q: str, d: list[str]) -> int | None:
                result = await client.rerank(q, d)
                assert len(result.items) == len(d)
                return result.usage.prompt_tokens

            return await self._concurrent(concurrency, one)
        finally:
            await client.aclose()

    async def llamaindex(self, concurrency: int) -> Any:
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        from rerank_plugins.llamaindex import VLLMRerank

        client = AsyncRerankClient(self.base_url, model=self.model, api_key=self.api_key)
        reranker = VLLMRerank(client=client)
        try:
            await client.rerank(self.query(), self.docs(2))

            async def one(q: str, d: list[str]) -> int | None:
                nodes = [NodeWithScore(node=TextNode(text=t)) for t in d]
                out = await reranker.apostprocess_nodes(nodes, query_bundle=QueryBundle(q))
                assert len(out) == len(d)
                return None

            return await self._concurrent(concurrency, one)
        finally:
            await client.aclose()

    async def langchain(self, concurrency: int) -> Any:
        from langchain_core.documents import Document

        from rerank_plugins.langchain import VLLMRerank

        client = AsyncRerankClient(self.base_url, model=self.model, api_key=self.api_key)
        reranker = VLLMRerank(client=client)
        try:
            await client.rerank(self.query(), self.docs(2))

            async def one(q: str, d: list[str]) -> int | None:
                out = await reranker.acompress_documents([Document(page_content=t) for t in d], q)
                assert len(out) == len(d)
                return None

            return await self._concurrent(concurrency, one)
        finally:
            await client.aclose()

    def sequential_requests(self, calls: int) -> Any:
        """The seed article: ``requests.post`` in a loop, 5 documents a call."""
        work = [(self.query(), self.docs(5)) for _ in range(calls)]
        latencies, tokens = [], 0
        start = time.perf_counter()
        for q, d in work:
            t0 = time.perf_counter()
            r = requests.post(
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


CONCURRENT = {
    "ceiling": ("raw httpx, {c} requests in flight (the ceiling)", "ceiling", 8),
    "ours_c1": ("`AsyncRerankClient`, 1 call at a time", "ours", 1),
    "ours_c4": ("`AsyncRerankClient`, 4 calls at once", "ours", 4),
    "ours_c16": ("`AsyncRerankClient`, 16 calls at once", "ours", 16),
    "llamaindex_c8": ("LlamaIndex `apostprocess_nodes`, 8 at once", "llamaindex", 8),
    "langchain_c8": ("LangChain `acompress_documents`, 8 at once", "langchain", 8),
}
SEQUENTIAL = {
    "seq_requests": "seed's sequential `requests.post`, 5 docs a call",
    "seq_ours": "sync `RerankClient`, sequential 5-doc calls",
}


def measure(
    base_url: str, model: str, quick: bool, api_key: str | None = None, log: Any = print
) -> dict[str, Any]:
    """Each scenario runs right after a ceiling run of its own; its ratio is to that one.

    The machine is shared and its load swings within a minute, so a ratio is only taken
    between two runs back to back (and the two sequential patterns alternate in blocks).
    """
    bench = Bench(base_url, model, quick, api_key)
    rounds = 1 if quick else 3
    out: dict[str, Any] = {
        "load_before": load(),
        "base_url": base_url,
        "model": model,
        "max_model_len": bench.max_model_len,
        "doc_words": bench.doc_words,
        "batch": bench.batch,
        "docs_per_scenario": bench.total_docs,
        "seq_calls_per_block": bench.seq_calls,
        "rounds": rounds,
        "text_seed": bench.maker.seed,
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*CONCURRENT, *SEQUENTIAL)}
    ratios: dict[str, list[float]] = {k: [] for k in runs}
    seq_ratio: list[float] = []
    sync = RerankClient(base_url, model=model, api_key=api_key)
    sync.rerank(bench.query(), bench.docs(2))
    rng = random.Random(bench.maker.seed)
    loop = asyncio.new_event_loop()

    def concurrent(name: str) -> dict[str, Any]:
        _, method, conc = CONCURRENT[name]
        lat, docs, tok, sec = loop.run_until_complete(getattr(bench, method)(conc))
        return {"_lat": lat, "_docs": docs, "_tok": tok, "_sec": sec}

    def sequential() -> dict[str, dict[str, Any]]:
        # Alternating blocks, so both patterns see the same machine load.
        this: dict[str, dict[str, Any]] = {}
        for _ in range(2):
            for key in ("seq_requests", "seq_ours"):
                if key == "seq_requests":
                    res = bench.sequential_requests(max(1, bench.seq_calls // 2))
                else:
                    res = bench.sequential_ours(sync, max(1, bench.seq_calls // 2))
                prev = this.get(key)
                if prev is not None:
                    res = (
                        prev["_lat"] + res[0],
                        prev["_docs"] + res[1],
                        prev["_tok"] + res[2],
                        prev["_sec"] + res[3],
                    )
                this[key] = {"_lat": res[0], "_docs": res[1], "_tok": res[2], "_sec": res[3]}
        return this

    def figures(raw: dict[str, Any], per_doc: float) -> dict[str, Any]:
        estimated = raw["_tok"] is None
        tok = per_doc * raw["_docs"] if estimated else raw["_tok"]
        return _figures(raw["_lat"], raw["_docs"], tok, raw["_sec"], estimated)

    try:
        for r in range(rounds):
            order = [*(k for k in CONCURRENT if k != "ceiling"), "seq"]
            rng.shuffle(order)
            for name in order:
                ceiling_raw = concurrent("ceiling")
                per_doc = ceiling_raw["_tok"] / ceiling_raw["_docs"]
                ceiling = figures(ceiling_raw, per_doc)
                runs["ceiling"].append(ceiling)
                ratios["ceiling"].append(1.0)
                done = sequential() if name == "seq" else {name: concurrent(name)}
                for key, raw in done.items():
                    fig = figures(raw, per_doc)
                    runs[key].append(fig)
                    ratios[key].append(fig["documents_per_s"] / ceiling["documents_per_s"])
                if name == "seq":
                    seq_ratio.append(
                        runs["seq_ours"][-1]["documents_per_s"]
                        / runs["seq_requests"][-1]["documents_per_s"]
                    )
            log(
                f"  throughput round {r + 1}/{rounds}: ceiling "
                f"{runs['ceiling'][-1]['documents_per_s']:.1f} docs/s; "
                + ", ".join(f"{k} x{ratios[k][-1]:.2f}" for k in runs if k != "ceiling")
            )
    finally:
        sync.close()
        loop.close()
    keys = (
        "requests_per_s",
        "documents_per_s",
        "tokens_per_s",
        "latency_mean_ms",
        "latency_median_ms",
        "latency_p99_ms",
    )
    out["scenarios"] = {
        name: {
            "label": (CONCURRENT[name][0].format(c=CONCURRENT[name][2]))
            if name in CONCURRENT
            else SEQUENTIAL[name],
            "concurrency": CONCURRENT[name][2] if name in CONCURRENT else 1,
            "docs_per_request": bench.batch if name in CONCURRENT else 5,
            "tokens_estimated": any(f["tokens_estimated"] for f in runs[name]),
            **{k: summary([f[k] for f in runs[name]]) for k in keys},
            "ratio_to_ceiling": summary(ratios[name]),
            "runs": runs[name],
        }
        for name in runs
    }
    out["seq_ours_over_requests"] = summary(seq_ratio)
    out["load_after"] = load()
    return out


def sequential_check(
    base_url: str, model: str, quick: bool, api_key: str | None = None, log: Any = print
) -> dict[str, Any]:
    """Sequential 5-document calls: ``requests.post`` and our sync client, call by call.

    The two alternate (A B, then B A, ...) so each pair sees the same load; the figure is the
    median of the per-pair latency ratios ours / requests.post, and of each one's latency.
    """
    bench = Bench(base_url, model, quick, api_key)
    pairs = 6 if quick else 60
    out: dict[str, Any] = {"load_before": load(), "pairs": pairs}
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
