"""`bash bench/run.sh --quick` against the session's MiniLM server: every output exists and parses.

A smoke run for CI: nothing is asserted on speed (the machine is shared and loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.servers import REPO_ROOT, ServerHandle


def test_bench_quick_writes_results(minilm_server: ServerHandle, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = dict(os.environ, RERANK_BENCH_PYTHON=sys.executable)
    proc = subprocess.run(
        [
            "bash",
            "bench/run.sh",
            "--quick",
            "--base-url",
            minilm_server.base_url,
            "--model",
            minilm_server.model_name,
            "--tokenizer",
            str(minilm_server.model_path),
            "--out-dir",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["quick"] is True
    sizes = data["overhead"]["sizes"]
    assert set(sizes) == {"10", "100", "1000"}
    for block in sizes.values():
        for variant in ("raw_httpx", "requests_post", "ours_single", "ours_default"):
            assert block["per_1000_docs"][variant]["wall"]["median"] > 0
            assert block["ratio_to_raw_httpx"][variant]["client_cpu"]["n"] >= 2
    assert data["overhead"]["profile"]

    scenarios = data["throughput"]["scenarios"]
    assert {
        "ceiling",
        "ours_c1",
        "llamaindex_c8",
        "langchain_c8",
        "seq_requests",
        "seq_ours",
    } <= set(scenarios)
    for s in scenarios.values():
        for key in ("requests_per_s", "documents_per_s", "tokens_per_s", "latency_p99_ms"):
            assert s[key]["median"] > 0, (s["label"], key)
        assert s["ratio_to_ceiling"]["median"] > 0
    # The sequential rows are their own pair: ours against the seed's requests.post.
    assert scenarios["seq_requests"]["paired_with"] == "seq_requests"
    assert scenarios["seq_ours"]["paired_with"] == "seq_requests"
    assert scenarios["seq_requests"]["ratio_to_ceiling"]["median"] == 1.0
    seq_calls = data["throughput"]["seq_calls_per_block"]
    for key in ("seq_requests", "seq_ours"):
        assert [r["requests"] for r in scenarios[key]["runs"]] == [seq_calls] * len(
            scenarios[key]["runs"]
        )
    assert "documents_per_s" in data["vllm_bench"] or "error" in data["vllm_bench"]

    assert {c["language"] for c in data["bm25"]} == {"en", "zh"}
    for case in data["bm25"]:
        assert case["mismatches"] == 0, case
        assert case["query_p50_ms"]["median"] > 0

    text = (out / "RESULTS.md").read_text()
    for heading in ("## Client overhead", "## Throughput", "## BM25"):
        assert heading in text
    for chart in data["charts"]:
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data["charts"]) == 3
