#!/usr/bin/env bash
# Run every benchmark and write RESULTS.md, results.json and PNG charts.
#
#   bash bench/run.sh [--quick] [--base-url URL --model NAME] [--tokenizer PATH_OR_ID]
#                     [--out-dir DIR] [--only overhead,throughput,vllm,bm25]
#
# Without --base-url it starts the vLLM server it needs (all-MiniLM-L6-v2 from .venv-vllm) and
# stops it by PID at the end. With --base-url it runs unchanged against any vLLM server, a GPU
# one included; its API key comes from RERANK_API_KEY in the environment. Full runs write bench/; --quick (CI smoke run, under 3 minutes) writes
# tests/artifacts/bench-quick/ unless --out-dir says otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${RERANK_BENCH_PYTHON:-.venv/bin/python}
exec "$PY" bench/run_all.py "$@"
