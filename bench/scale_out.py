"""Documents/s through one server, N replicas behind vllm-router, and one DP=N server.

    python bench/scale_out.py MODEL_DIR --served-model-name NAME --python .venv-vllm/bin/python
    python bench/scale_out.py MODEL_DIR --replicas 4 --gpus --max-model-len 8192 --dp  # 4 GPUs

Starts N (``--replicas``, default 2) replicas of MODEL behind vllm-router (round_robin) and a
second router with consistent_hash over the same replicas; with ``--gpus`` replica i sees only
GPU i (``CUDA_VISIBLE_DEVICES=i`` when it is spawned). Optionally (``--dp``), once the replicas
are stopped, one server with ``--data-parallel-size N`` (on GPUs, over all of them; on a CPU,
one engine per API server in one process). Then, per target, ``--rounds`` rounds of
``--calls`` concurrent ``AsyncRerankClient.rerank`` calls of ``--docs`` documents each (fresh
documents every round, so no cache can answer) and reports documents/s (median round), call
latency P50/P99 and how the pair-requests were spread over the replicas (vLLM's /metrics).

Targets: ``one server`` (replica 0 directly; replica 1 idles), ``2 replicas round_robin``,
``2 replicas consistent_hash`` (client ``routing_header="X-Session-ID"``), ``DP=2``; and
``--repeat`` adds the same for a workload that asks 4 queries over and over with the same
documents (where routing a query to the replica that saw it could reuse a prefix cache).
Each target also gets tokens/s (the server's ``usage``) and, for the scale-out targets, its
documents/s over N x one server's (the goal is at least 0.9). Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from rerank_plugins import AsyncRerankClient
from rerank_plugins.cluster import RouterConfig, RouterProcess, ServerCluster
from rerank_plugins.serve import ServeConfig, VLLMServer, stop_servers

WORDS = [
    "json",
    "file",
    "python",
    "read",
    "parse",
    "load",
    "data",
    "string",
    "object",
    "dict",
    "list",
    "csv",
    "module",
    "pandas",
    "path",
    "open",
    "text",
    "encode",
    "decode",
    "schema",
    "value",
    "key",
    "array",
    "nested",
    "field",
    "record",
    "stream",
    "buffer",
]


def doc(i: int, salt: str) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(30)]
    return f"{salt} document {i}: " + " ".join(words)


def requests_per_engine(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def run_target(
    url: str, model: str, args: argparse.Namespace, *, header: bool, repeat: bool, tag: str
) -> dict[str, Any]:
    options: dict[str, Any] = {"routing_header": "X-Session-ID"} if header else {}
    rounds: list[float] = []
    tokens_per_s: list[float] = []
    latencies: list[float] = []
    async with AsyncRerankClient(url, model=model, timeout=300, **options) as client:
        await client.rerank("warm up", [doc(i, "warm") for i in range(args.docs)])

        async def one(q: str, docs: list[str]) -> int:
            t0 = time.perf_counter()
            result = await client.rerank(q, docs)
            latencies.append(time.perf_counter() - t0)
            assert len(result.items) == len(docs)
            return result.usage.prompt_tokens

        for r in range(args.rounds):
            calls = []
            for c in range(args.calls):
                if repeat:  # 4 queries asked again and again over the same documents
                    q, salt = f"query {c % 4}", f"fixed{c % 4}"
                else:  # fresh queries and documents every round
                    q, salt = f"query {tag} {r} {c}", f"{tag}-{r}-{c}"
                calls.append(one(q, [doc(i, salt) for i in range(args.docs)]))
            t0 = time.perf_counter()
            tokens = await asyncio.gather(*calls)
            seconds = time.perf_counter() - t0
            rounds.append(args.calls * args.docs / seconds)
            tokens_per_s.append(sum(tokens) / seconds)
    latencies.sort()
    return {
        "docs_per_s_median": round(statistics.median(rounds), 1),
        "docs_per_s_rounds": [round(x, 1) for x in rounds],
        "tokens_per_s_median": round(statistics.median(tokens_per_s)),
        "latency_p50_s": round(latencies[len(latencies) // 2], 3),
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
    }


@contextlib.contextmanager
def visible_devices(devices: str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES for the processes spawned inside (a replica reads it at spawn)."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


class PinnedServer(VLLMServer):
    """A replica spawned with only the GPUs ``devices`` visible."""

    def __init__(self, cfg: ServeConfig, devices: str) -> None:
        super().__init__(cfg)
        self.devices = devices

    def start(self) -> PinnedServer:
        with visible_devices(self.devices):
            return super().start()


class PinnedCluster(ServerCluster):
    """ServerCluster whose replica i is spawned with only GPU i visible (``pin=True``)."""

    def __init__(self, serve: ServeConfig, replicas: int, router: RouterConfig, pin: bool):
        super().__init__(serve, replicas, router)
        self.pin = pin
        if pin:
            self.replicas = [
                PinnedServer(server.config, str(i)) for i, server in enumerate(self.replicas)
            ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--python", default=None, help="Python with vLLM (env RERANK_VLLM_PYTHON)")
    p.add_argument("--max-model-len", type=int, default=256)
    p.add_argument("--calls", type=int, default=8)
    p.add_argument("--docs", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2, help="N replicas (and DP size)")
    p.add_argument("--gpus", action="store_true", help="one GPU per replica; DP over N GPUs")
    p.add_argument("--dp", action="store_true", help="also a --data-parallel-size N server")
    p.add_argument("--repeat", action="store_true", help="also the repeated-query workload")
    p.add_argument("--log-dir", default="tests/artifacts/logs")
    p.add_argument("--out", default="tests/artifacts/scale_out_bench.json")
    args = p.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)

    def cfg(name: str, *extra: str) -> ServeConfig:
        return ServeConfig(
            model=args.model,
            served_model_name=args.served_model_name,
            python=args.python,
            max_model_len=args.max_model_len,
            extra_args=extra,
            log_path=f"{args.log_dir}/bench_{name}.log",
            startup_timeout=900,
        )

    n = args.replicas
    cluster = PinnedCluster(
        cfg("replica"),
        n,
        RouterConfig(log_path=f"{args.log_dir}/bench_router.log", startup_timeout=900),
        pin=args.gpus,
    )
    if args.gpus:
        dp_args: tuple[str, ...] = ("--data-parallel-size", str(n))
    else:
        # One engine per API server, no separate worker process: the leanest DP on a CPU.
        dp_args = ("--data-parallel-size", str(n), "--api-server-count", "1")
        dp_args += ("--distributed-executor-backend", "uni")
    hash_router: RouterProcess | None = None
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "replicas": n,
        "gpus": args.gpus,
        "load_before": os.getloadavg(),
    }
    workloads = [False, True] if args.repeat else [False]

    def measure(name: str, url: str, header: bool, replicas: list[str]) -> None:
        for repeat in workloads:
            before = [requests_per_engine(u) for u in replicas]
            tag = name.replace(" ", "_")
            out = asyncio.run(run_target(url, model, args, header=header, repeat=repeat, tag=tag))
            after = [requests_per_engine(u) for u in replicas]
            out["pairs_per_replica"] = [int(b - a) for a, b in zip(before, after, strict=True)]
            one = results.get(f"one server{' (repeated queries)' if repeat else ''}")
            if one is not None and name != "one server":
                out["ratio_to_n_x_one"] = round(
                    out["docs_per_s_median"] / (n * one["docs_per_s_median"]), 3
                )
            key = f"{name}{' (repeated queries)' if repeat else ''}"
            results[key] = out
            print(f"{key}: {json.dumps(out)}", flush=True)

    model = cluster.model_name
    try:
        cluster.start()
        replicas = [s.base_url for s in cluster.replicas]
        hash_router = RouterProcess(
            RouterConfig(
                policy="consistent_hash",
                log_path=f"{args.log_dir}/bench_hash_router.log",
                startup_timeout=900,
            ),
            replicas,
        ).start()
        cluster.wait_ready()
        hash_router.wait_ready()
        measure("one server", replicas[0], False, replicas)
        measure(f"{n} replicas round_robin", cluster.base_url, False, replicas)
        measure(f"{n} replicas consistent_hash", hash_router.base_url, True, replicas)
    finally:
        if hash_router is not None:
            hash_router.stop()
        cluster.stop()
    if args.dp:  # after the replicas are gone: on GPUs both would want the same memory
        dp = VLLMServer(cfg(f"dp{n}", *dp_args))
        try:
            dp.start()
            dp.wait_ready()
            measure(f"DP={n} server", dp.base_url, False, [dp.base_url])
        finally:
            stop_servers([dp])
    results["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
