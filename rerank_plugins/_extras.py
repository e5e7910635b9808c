"""Optional extras (bottom layer): import a module an extra installs, or say which to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_extra(module: str, missing: str) -> ModuleType:
    """``module`` imported, else an ``ImportError`` saying ``missing`` (what to pip install)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(missing) from exc
