"""Bundled sample data: a labeled English evaluation set and demo corpora with example queries.

The files ship as package data. The data model (:class:`Document`, :class:`EvalSet`) and the
readers are :mod:`rerank_plugins.eval.data`'s, re-exported here; the public sets of the
repository's ``data/`` are loaded by :func:`rerank_plugins.eval.load_collection`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from os import PathLike
from typing import Any

from ..eval.data import BUNDLED_SETS, Document, EvalSet, bundled_set, read_corpus
from ..eval.data import read_eval_set as _read_eval_set

__all__ = [
    "CORPORA",
    "EVAL_SETS",
    "CandidateList",
    "Document",
    "EvalSet",
    "Examples",
    "load_corpus",
    "load_eval_set",
    "load_examples",
    "read_eval_set",
]

EVAL_SETS = BUNDLED_SETS
CORPORA = ("demo_en", "demo_zh")


@dataclass(frozen=True, slots=True)
class CandidateList:
    """A hand-made query with a short candidate list, for reranking without retrieval."""

    name: str
    language: str
    query: str
    documents: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Examples:
    """Example queries per bundled corpus name, and hand-made candidate lists."""

    queries: Mapping[str, tuple[str, ...]]
    candidate_lists: tuple[CandidateList, ...]


def _package_dir() -> Traversable:
    return files(__name__)


def _check_name(name: str, allowed: Iterable[str], what: str) -> None:
    allowed = tuple(allowed)
    if name not in allowed:
        raise ValueError(f"unknown {what} {name!r}; bundled: {', '.join(allowed)}")


def load_eval_set(name: str = "eval_en") -> EvalSet:
    """Load a bundled evaluation set (``"eval_en"``: 35 English queries over 305 passages)."""
    return bundled_set(name)


def read_eval_set(directory: str | PathLike[str]) -> EvalSet:
    """Load your own evaluation set laid out like the bundled one.

    ``directory`` holds ``corpus.jsonl`` (``{"id", "text", "title"?}`` per line),
    ``queries.jsonl`` (``{"id", "text"}``) and ``qrels.tsv`` (``qid docid grade`` rows; a
    header row and TREC's four-column format are accepted).
    """
    return _read_eval_set(directory)


def load_corpus(name: str) -> list[Document]:
    """Load a bundled corpus: ``"demo_en"`` (405 passages), ``"demo_zh"`` (307) or ``"eval_en"``."""
    _check_name(name, (*CORPORA, *EVAL_SETS), "corpus")
    base = _package_dir()
    source = base / name / "corpus.jsonl" if name in EVAL_SETS else base / f"{name}.jsonl"
    return list(read_corpus(source))


def load_examples() -> Examples:
    """Load the example queries of the demo corpora and the hand-made candidate lists."""
    raw: Any = json.loads((_package_dir() / "demo_examples.json").read_text(encoding="utf-8"))
    queries = {name: tuple(items) for name, items in raw["queries"].items()}
    lists = tuple(
        CandidateList(
            name=item["name"],
            language=item["language"],
            query=item["query"],
            documents=tuple(item["documents"]),
            note=item.get("note", ""),
        )
        for item in raw["candidate_lists"]
    )
    return Examples(queries=queries, candidate_lists=lists)
