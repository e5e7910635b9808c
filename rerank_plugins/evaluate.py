"""``rerank-evaluate``'s old home: the evaluation now lives in :mod:`rerank_plugins.eval`.

This module re-exports its public names so that ``from rerank_plugins.evaluate import ...``
and ``python -m rerank_plugins.evaluate`` keep working.
"""

from __future__ import annotations

from .eval.cli import main
from .eval.report import Evaluation, Progress, RerankSetting, System
from .eval.run import aevaluate_reranking, compare_runs, evaluate_reranking, first_stage_bm25

__all__ = [
    "Evaluation",
    "Progress",
    "RerankSetting",
    "System",
    "aevaluate_reranking",
    "compare_runs",
    "evaluate_reranking",
    "first_stage_bm25",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
