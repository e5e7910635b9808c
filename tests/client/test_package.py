"""The package as shipped: what it exports, what it imports, which files it carries."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import rerank_plugins


def test_all_names_exist_once():
    # Its order is ruff's (RUF022); here: nothing missing, nothing twice.
    assert len(set(rerank_plugins.__all__)) == len(rerank_plugins.__all__)
    for name in rerank_plugins.__all__:
        assert hasattr(rerank_plugins, name), name


def test_importing_the_core_loads_no_framework():
    code = (
        "import sys, rerank_plugins, rerank_plugins.serve; "
        "heavy = [m for m in ('llama_index', 'langchain_core', 'gradio', 'vllm', 'torch', "
        "'bm25s', 'jieba') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shipped_files_are_present():
    root = resources.files("rerank_plugins")
    assert (root / "py.typed").is_file()
    template = (root / "templates" / "qwen3_reranker.jinja").read_text()
    assert "<Instruct>" in template and "</think>" in template


@pytest.mark.skipif(
    os.environ.get("RERANK_TEST_INSTALLED") != "1", reason="only under tests/run.sh"
)
def test_suite_runs_against_the_installed_package_not_the_source_tree():
    source_tree = Path(__file__).resolve().parents[2] / "rerank_plugins"
    assert Path(rerank_plugins.__file__).resolve().parent != source_tree
    assert "site-packages" in rerank_plugins.__file__


def _extra(name: str, extras: dict[str, list[str]]) -> set[str]:
    """The distributions an extra installs, its rerank-plugins[...] references followed."""
    import re

    found: set[str] = set()
    for requirement in extras[name]:
        inner = re.fullmatch(r"rerank-plugins\[([a-z,\-]+)\]", requirement)
        if inner:
            for sub in inner.group(1).split(","):
                found |= _extra(sub, extras)
        else:
            found.add(re.split(r"[<>=!\[;~ ]", requirement, maxsplit=1)[0].lower())
    return found


def test_the_demo_extra_installs_every_module_the_demo_needs():
    """`bash demo/run.sh` installs `.[demo]`: the demo builds its client with metrics on."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    demo = _extra("demo", extras)
    for dist in ("gradio", "bm25s", "jieba", "pystemmer", "matplotlib", "prometheus-client"):
        assert dist in demo, f"the [demo] extra does not install {dist}"
    # run.sh reinstalls when a module is missing: it must check for the metrics one too.
    assert "prometheus_client" in (root / "demo" / "run.sh").read_text()
