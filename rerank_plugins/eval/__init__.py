"""Does reranking help on my data? The whole evaluation feature lives in this package.

Labelled data, BM25 then a reranker, metrics with bootstrap intervals, the report and the
``rerank-evaluate`` command.

Modules: :mod:`.data` (the one data model and readers, sets found by name), :mod:`.trec` (run
files), :mod:`.metrics`, :mod:`.stats` (bootstrap), :mod:`.languages` (the one CJK rule),
:mod:`.run` (the runner), :mod:`.report`, :mod:`.cli`. Pure standard library apart from the
runner's BM25 (the ``[eval]`` extra) and client.
"""

from __future__ import annotations

from .data import (
    Collection,
    Document,
    EvalSet,
    load_collection,
    locate_collection,
    read_eval_set,
    read_trec_qrels,
)
from .languages import MODEL_LANGUAGES, cjk_share, model_languages, model_reads, text_language
from .metrics import evaluate, evaluate_per_query
from .report import Evaluation, RerankSetting, System
from .run import aevaluate_reranking, compare_runs, evaluate_reranking
from .stats import Interval, PairedComparison, bootstrap_mean, paired_bootstrap
from .trec import read_trec_run, write_trec_run

__all__ = [
    "MODEL_LANGUAGES",
    "Collection",
    "Document",
    "EvalSet",
    "Evaluation",
    "Interval",
    "PairedComparison",
    "RerankSetting",
    "System",
    "aevaluate_reranking",
    "bootstrap_mean",
    "cjk_share",
    "compare_runs",
    "evaluate",
    "evaluate_per_query",
    "evaluate_reranking",
    "load_collection",
    "locate_collection",
    "model_languages",
    "model_reads",
    "paired_bootstrap",
    "read_eval_set",
    "read_trec_qrels",
    "read_trec_run",
    "text_language",
    "write_trec_run",
]
