"""Engine flags for prefill-only pooling, measured: one ``rerank-serve`` per flag set, same load.

    python bench/flag_sweep.py MODEL --family qwen3-reranker --out DIR \\
        --set "defaults=" --set "mnbt16k=--max-num-batched-tokens 16384" ...

For each set it starts ``rerank-serve MODEL --family F -- FLAGS`` (nothing else changed: the
first set with no flags is ``rerank-serve``'s defaults, which on a GPU are vLLM's own plus the
family's), waits for ``/health``, warms up, then measures the GPU profile's ceiling (raw httpx,
``--concurrency`` requests of 100 ~200-word documents in flight, fresh texts every run,
``--runs`` runs) and stops the server by process group. Writes DIR/sweep.json after every set
(a later failure keeps the earlier figures) and DIR/SWEEP.md; a set that fails is recorded with
its error and the next one runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import profiles
from common import summary
from throughput import Bench

from rerank_plugins.serve import free_port

ROOT = Path(__file__).resolve().parents[1]


def serve(
    model: str, family: str, name: str, flags: list[str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "rerank_plugins.serve", model, "--family", family,
           "--served-model-name", name, "--port", str(port), "--host", "127.0.0.1",
           "--timeout", "900"]  # fmt: skip
    if flags:
        cmd += ["--", *flags]
    out = log.open("w")
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            tail = " / ".join(log.read_text(errors="replace").splitlines()[-6:])
            raise RuntimeError(f"rerank-serve exited {proc.returncode}: {tail[-800:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError(f"not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def measure(base_url: str, name: str, concurrency: int, runs: int, quick: bool) -> dict[str, Any]:
    bench = Bench(base_url, name, quick, None, profiles.gpu(quick))
    docs = 100 if quick else concurrency * 100
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(bench.ceiling((concurrency, 100, 200)))  # warm-up
        figures = []
        for _ in range(runs):
            lat, n, tokens, sec = loop.run_until_complete(bench.ceiling((concurrency, 100, docs)))
            figures.append(
                {
                    "documents_per_s": n / sec,
                    "tokens_per_s": (tokens or 0) / sec,
                    "latency_median_ms": statistics.median(lat) * 1000,
                    "seconds": sec,
                }
            )
    finally:
        loop.close()
    return {k: summary([f[k] for f in figures]) for k in figures[0]} | {"runs": figures}


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "| flag set | vLLM flags added | ready s | documents/s | tokens/s | median latency ms "
        "| x defaults |",
        "|---|---|---|---|---|---|---|",
    ]
    base = None
    for name, row in data["sets"].items():
        if "error" in row:
            lines.append(f"| {name} | `{row['flags']}` | failed: `{row['error'][:200]}` ||||")
            continue
        dps = row["documents_per_s"]
        base = base or dps["median"]

        def f(s: dict[str, float], d: int) -> str:
            return f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"

        lines.append(
            f"| {name} | `{row['flags'] or '(none)'}` | {row.get('ready_s') or 0:.0f} | "
            f"{f(dps, 1)} | "
            f"{f(row['tokens_per_s'], 0)} | {f(row['latency_median_ms'], 0)} | "
            f"{dps['median'] / base:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--family", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--set",
        action="append",
        required=True,
        help="NAME=FLAGS (FLAGS may be empty: rerank-serve's defaults; @URL: a running server)",
    )
    p.add_argument("--served-model-name", default="bench")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "model": args.model,
        "family": args.family,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sets": {},
    }
    for item in args.set:
        name, _, flags = item.partition("=")
        row: dict[str, Any] = {"flags": flags}
        log = out / f"serve-{name}.log"
        attach = flags.startswith("@")  # "@URL": a server already running, measured as it is
        proc = None
        if attach:
            base_url = flags[1:]
            row["flags"] = "(the running server's)"
        else:
            proc, base_url = serve(
                args.model, args.family, args.served_model_name, shlex.split(flags), log
            )
        try:
            if proc is not None:
                row["ready_s"] = wait_ready(proc, base_url, log, args.timeout)
                print(f"[{time.strftime('%H:%M:%S')}] {name}: ready in {row['ready_s']:.0f} s")
            row |= measure(
                base_url, args.served_model_name, args.concurrency, args.runs, args.quick
            )
            print(
                f"[{time.strftime('%H:%M:%S')}] {name}: "
                f"{row['documents_per_s']['median']:.1f} docs/s, "
                f"{row['tokens_per_s']['median']:.0f} tokens/s",
                flush=True,
            )
        except Exception as exc:  # recorded; the next set still runs
            row["error"] = f"{type(exc).__name__}: {exc}"[:800]
            print(f"{name} FAILED: {row['error']}", flush=True)
        finally:
            if proc is not None:
                stop(proc)
        data["sets"][name] = row
        (out / "sweep.json").write_text(json.dumps(data, indent=1))
    (out / "SWEEP.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
