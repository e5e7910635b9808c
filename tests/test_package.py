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
    source_tree = Path(__file__).resolve().parents[1] / "rerank_plugins"
    assert Path(rerank_plugins.__file__).resolve().parent != source_tree
    assert "site-packages" in rerank_plugins.__file__
