"""Optional extras (bottom layer): import a module an extra installs, or say which to install."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType


def import_extra(module: str, missing: str) -> ModuleType:
    """``module`` imported, else an ``ImportError`` saying ``missing`` (what to pip install)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(missing) from exc


@contextmanager
def extra_imports(framework: str, extra: str) -> Iterator[None]:
    """Imports an adapter module needs from its extra: a failed one names the extra to install."""
    try:
        yield
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            f"rerank_plugins.{extra} needs {framework}: pip install 'rerank-plugins[{extra}]'"
        ) from exc
