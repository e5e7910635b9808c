"""MkDocs hook: the demo's screenshots, served from demo/ where the browser tests write them.

The docs show the same PNGs as the README instead of copies that would go stale whenever the
demo's tests regenerate them. They appear in the site as ``assets/demo/<name>.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

DEMO = Path(__file__).resolve().parents[2] / "demo"


def on_files(files: Files, config: Any) -> Files:
    """Add every ``demo/*.png`` to the site (once per language build)."""
    for png in sorted(DEMO.glob("*.png")):
        uri = f"assets/demo/{png.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
