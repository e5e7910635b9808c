"""Every Python example in README.md runs against a real server, as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_example_runs(number, minilm_server, tiny_server, tmp_path):
    code = BLOCKS[number]
    # Examples marked "# Qwen3-Reranker" need one; the others run on MiniLM's real scores.
    server = tiny_server if code.startswith("# Qwen3-Reranker") else minilm_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    env["RERANK_BASE_URL"] = server.base_url
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "an example should show its result"
    if server is minilm_server and "json.load(f) parses" in code:
        # The JSON document ranks first on MiniLM's real scores.
        assert out.stdout.splitlines()[0].endswith(
            "json.load(f) parses a JSON file opened with open() into a dict."
        )
    if "no-such-model" in code:
        assert out.stdout.startswith("404 ")
