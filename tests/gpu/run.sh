#!/usr/bin/env bash
# The GPU check, outside CI: serve a tiny checkpoint of each family with rerank-serve's defaults
# on this machine's GPU and compare a plain httpx post, RerankClient and both adapters with the
# transformers reference (see tests/gpu/check.py for what is checked and the tolerance).
#
#   bash tests/gpu/run.sh [--out DIR] [--families qwen3-reranker,mxbai,bge-gemma,jina-v3] [--no-cluster]
#
# Needs a CUDA GPU and a Python with vLLM, torch and transformers (env RERANK_VLLM_PYTHON,
# default python3) that can import this checkout. Writes DIR/REPORT.md and DIR/gpu-check.json
# (default tests/gpu/out/); exits non-zero if any check failed. pytest never collects this
# folder (no test_*.py here), so CI stays CPU-only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${RERANK_VLLM_PYTHON:-python3}
export RERANK_VLLM_PYTHON=$PY PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export RERANK_COMMIT=${RERANK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}
exec "$PY" tests/gpu/check.py "$@"
