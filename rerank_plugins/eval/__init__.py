"""Helpers of ``python -m rerank_plugins.evaluate``: data, TREC files, statistics, languages.

Pure standard library; BM25 (``rerank_plugins.retrieval``) needs the ``[eval]`` extra.
"""

from __future__ import annotations

from .data import Collection, load_collection, read_trec_qrels, read_trec_run, write_trec_run
from .languages import MODEL_LANGUAGES, cjk_share, model_languages, model_reads, text_language
from .stats import Interval, PairedComparison, bootstrap_mean, paired_bootstrap

__all__ = [
    "MODEL_LANGUAGES",
    "Collection",
    "Interval",
    "PairedComparison",
    "bootstrap_mean",
    "cjk_share",
    "load_collection",
    "model_languages",
    "model_reads",
    "paired_bootstrap",
    "read_trec_qrels",
    "read_trec_run",
    "text_language",
    "write_trec_run",
]
