"""The docs site builds with ``mkdocs build --strict``, in both languages, from this checkout.

Strict mode fails on a broken link or anchor, a page missing from the nav and a reference
mkdocstrings cannot resolve. The API reference must cover every public name; the README must
stay a first page.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("rerank_plugins.llamaindex.VLLMRerank", "rerank_plugins.langchain.VLLMRerank")
ZH_PAGES = ("index", "install", "serving", "client", "llamaindex", "langchain", "demo")


def _public_names() -> list[str]:
    """``rerank_plugins.__all__`` as this checkout's source spells it (not an installed copy)."""
    tree = ast.parse((ROOT / "rerank_plugins" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("rerank_plugins/__init__.py defines no __all__")


def _mkdocs() -> str:
    for candidate in (Path(sys.executable).parent / "mkdocs", ROOT / ".venv" / "bin" / "mkdocs"):
        if candidate.exists():
            return str(candidate)
    raise AssertionError("mkdocs is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [_mkdocs(), "build", "--strict", "--clean", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def test_api_reference_lists_every_public_name_and_both_adapters(site: Path):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    wanted = [f"rerank_plugins.{name}" for name in _public_names()] + list(ADAPTERS)
    missing = [name for name in wanted if f'id="{name}"' not in html]
    assert not missing, f"not documented in the API reference: {missing}"
    # The docstrings themselves made it in, not only the headings.
    assert "Rank ``documents``" not in html and "best first" in html


def test_chinese_pages_build_with_a_language_switch(site: Path):
    for page in ZH_PAGES:
        source = ROOT / "docs" / "zh" / f"{page}.md"
        assert source.exists(), f"docs/zh/{page}.md is missing"
        built = site / "zh" / ("index.html" if page == "index" else f"{page}/index.html")
        html = built.read_text(encoding="utf-8")
        assert re.search(r"[\u4e00-\u9fff]", html), f"{built} has no Chinese text"
        assert 'hreflang="en"' in html and 'hreflang="zh"' in html, "no language switch"


@pytest.mark.parametrize("page", ["demo", "zh/demo"])
def test_demo_screenshots_are_in_the_site(site: Path, page: str):
    html = (site / page / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images, f"{page} shows no screenshot"
    for src in images:
        assert (site / page / src).resolve().is_file(), src


def test_readme_is_a_first_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 8 * 1024
    assert "README.zh-CN.md" in readme.splitlines()[0]
    assert (ROOT / "README.zh-CN.md").exists()
    # The order: install, serve, examples, demo, the docs, then development.
    order = [
        "pip install",
        "rerank-serve Qwen/Qwen3-Reranker-0.6B",
        "```python",
        "from rerank_plugins.llamaindex",
        "from rerank_plugins.langchain",
        "bash demo/run.sh",
        "demo/screenshot.png",
        "docs/en/",
        "Develop: `bash tests/run.sh`",
    ]
    positions = [readme.find(marker) for marker in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    # Figures that go stale live in bench/ and the docs' performance page, not here.
    assert not re.search(r"\b(tests? passed|\d+ tests)\b", readme)
    assert not re.search(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", readme)
    assert not re.search(r"\d ms\b|documents/s", readme)


def test_every_documented_class_and_method_has_a_docstring():
    """mkdocstrings renders an undocumented object as a bare heading; refuse that instead."""
    import griffe

    package = griffe.load("rerank_plugins", search_paths=[str(ROOT)], resolve_aliases=True)
    assert Path(str(package.filepath)).parent == ROOT / "rerank_plugins"  # this checkout's
    missing = []
    for path in [*_public_names(), *(a.removeprefix("rerank_plugins.") for a in ADAPTERS)]:
        obj = package[path]
        if obj.kind is not griffe.Kind.CLASS:
            continue  # constants and type aliases: described in docs/en/api.md
        if not obj.docstring:
            missing.append(path)
        for name, member in obj.members.items():
            public = not name.startswith("_") and not member.is_alias
            if public and member.kind is griffe.Kind.FUNCTION and not member.docstring:
                missing.append(f"{path}.{name}")
    assert not missing, f"no docstring: {missing}"


def _anchors(page: Path) -> set[str]:
    """Heading ids as GitHub and MkDocs both make them, plus explicit ``{#id}`` attributes."""
    text = page.read_text(encoding="utf-8")
    found = set(re.findall(r"\{#([\w-]+)\}", text))
    for heading in re.findall(r"^#+ (.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_readme_links_point_at_files_and_headings_that_exist(readme: str):
    text = (ROOT / readme).read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "no relative links found"
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / readme
        assert target.exists(), f"{readme}: {link} points at nothing"
        if anchor:
            assert anchor in _anchors(target), f"{readme}: {link} has no such heading"
