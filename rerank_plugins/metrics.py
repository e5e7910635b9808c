"""Ranking metrics (nDCG, MRR, recall): moved to :mod:`rerank_plugins.eval.metrics`.

This module re-exports its public names so that ``from rerank_plugins.metrics import ...``
keeps working.
"""

from __future__ import annotations

from .eval.metrics import *  # noqa: F403 - the same public names, kept in one list
from .eval.metrics import __all__ as __all__
