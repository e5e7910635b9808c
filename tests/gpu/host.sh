#!/usr/bin/env bash
# What runs on a lent GPU host that has no network and no vLLM (../shared/gpu/README.md): the
# parts from shared/gpu/build_chunks.sh are carried in, then the GPU check and the bench run
# from this checkout. One step a command, since the host takes commands of 10 minutes at most:
#
#   bash tests/gpu/host.sh stage DIR     copy the carried parts in DIR (c1..cN, extra/) to $PARTS
#   bash tests/gpu/host.sh unpack        unpack vLLM into $GPU_SITE (once), check the imports
#   bash tests/gpu/host.sh images OUT    the GPU check of the tiny Qwen3-VL reranker (images),
#                                        added to tests/gpu/gpu-check.json's rows (--update)
#   bash tests/gpu/host.sh bench OUT     a 4B-shaped checkpoint served by rerank-serve's defaults,
#                                        then `bash bench/run.sh --base-url` (every section)
#   bash tests/gpu/host.sh sweep OUT SET...  bench/flag_sweep.py, one rerank-serve per flag set
#                                        ("name=flags"; "defaults=" is rerank-serve's defaults)
#
# Servers listen on 127.0.0.1 and are stopped by PID (the check and the sweep stop their own).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PARTS=${PARTS:-/root/parts}
GPU_SITE=${GPU_SITE:-/root/gpu}
MODEL_4B=${MODEL_4B:-/root/m4b}
export PYTHONPATH=$PWD:$GPU_SITE/site VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1
export VLLM_NO_USAGE_STATS=1 RERANK_VLLM_PYTHON=python3 RERANK_BENCH_PYTHON=python3
export RERANK_COMMIT=${RERANK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo worktree)}

step=${1:?usage: host.sh stage|unpack|images|bench|sweep ...}
shift
case $step in
  stage)
    mkdir -p "$PARTS"
    cp -r "$1"/c*/. "$PARTS"/ 2>/dev/null || true
    [ -d "$1/extra" ] && cp -r "$1"/extra/. "$PARTS"/
    ls -la "$PARTS" ;;
  unpack)
    (cd "$PARTS" && bash unpack.sh "$GPU_SITE" >/dev/null)
    python3 -c "import torch, torchvision, transformers, vllm; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ;;
  images)
    out=$1
    mkdir -p "$out"
    cp tests/gpu/gpu-check.json "$out"/
    python3 tests/gpu/check.py --families qwen3-vl-reranker --no-cluster --update \
      --out "$out" --work /root/work ;;
  bench)
    out=$1
    [ -f "$MODEL_4B/config.json" ] || python3 "$PARTS/build_model.py" "$MODEL_4B" 4b
    port=8000
    python3 -m rerank_plugins.serve "$MODEL_4B" --family qwen3-reranker \
      --served-model-name qwen3-reranker-4b-shape --host 127.0.0.1 --port $port \
      --timeout 600 >"$out.serve.log" 2>&1 &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
    start=$(date +%s)
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
      kill -0 $pid 2>/dev/null || { tail -40 "$out.serve.log"; exit 1; }
      sleep 2
    done
    echo "rerank-serve ready in $(( $(date +%s) - start )) s"
    bash bench/run.sh --base-url "http://127.0.0.1:$port" --model qwen3-reranker-4b-shape \
      --tokenizer "$MODEL_4B" --out-dir "$out" "${@:2}" ;;
  sweep)
    out=$1
    shift
    [ -f "$MODEL_4B/config.json" ] || python3 "$PARTS/build_model.py" "$MODEL_4B" 4b
    sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    python3 bench/flag_sweep.py "$MODEL_4B" --family qwen3-reranker --out "$out" "${sets[@]}" ;;
  *)
    echo "unknown step $step" >&2
    exit 2 ;;
esac
