#!/usr/bin/env bash
# Create the venv of LiteLLM's proxy, which the scale-out tests put in front of a vLLM server.
#
# LiteLLM lives in a venv of its own (.venv-litellm, or $LITELLM_VENV): its proxy extra pins
# packages the project does not need. prisma makes a proxy with a master key answer 401, not
# 500, to a request without the key. Idempotent: an existing venv with the version is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LITELLM_VENV:-$ROOT/.venv-litellm}"
VERSION="${LITELLM_VERSION:-1.108.7}"
PY="$VENV/bin/python"

quiet_pip() {
    "$PY" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
}

[[ -x "$PY" ]] || python3 -m venv "$VENV"
have="$("$PY" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
if [[ "$have" != "$VERSION" ]] || ! "$PY" -c 'import prisma' 2>/dev/null; then
    start=$SECONDS
    quiet_pip install -q --disable-pip-version-check "litellm[proxy]==$VERSION" prisma
    echo "setup_litellm_env: installed litellm $VERSION in $((SECONDS - start)) s"
fi
echo "setup_litellm_env: ready: $VENV/bin/litellm"
