"""Bundled sample data: a labeled English evaluation set and demo corpora with example queries.

Pure standard library (``importlib.resources`` + ``json``); the files ship as package data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Any

_ENDS_CJK = re.compile(r"[\u3400-\u9fff]$")

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

EVAL_SETS = ("eval_en",)
CORPORA = ("demo_en", "demo_zh")

_Source = Traversable | Path


@dataclass(frozen=True, slots=True)
class Document:
    """One corpus entry: a stable id, the passage text and an optional title."""

    id: str
    text: str
    title: str | None = None

    @property
    def full_text(self) -> str:
        """Title and text as one passage, the way a reader (and BM25, and a reranker) sees it."""
        if not self.title:
            return self.text
        # A Chinese title is closed with a full stop and no space, an English one with ". ".
        return (
            f"{self.title}。{self.text}"
            if _ENDS_CJK.search(self.title)
            else (f"{self.title}. {self.text}")
        )


@dataclass(frozen=True, slots=True)
class EvalSet:
    """A labeled retrieval set: corpus, queries (id -> text), qrels (qid -> docid -> grade).

    Grades run 0-3: 3 answers the query fully, 2 substantially, 1 is related background,
    0 is judged off topic (often a hard negative sharing the query's words).
    """

    name: str
    corpus: tuple[Document, ...]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]] = field(repr=False)


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


def _lines(source: _Source) -> Iterator[tuple[int, str]]:
    with source.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                yield number, stripped


def _read_corpus(source: _Source) -> tuple[Document, ...]:
    docs: list[Document] = []
    seen: set[str] = set()
    for number, line in _lines(source):
        try:
            row: Any = json.loads(line)
            doc = Document(id=str(row["id"]), text=str(row["text"]), title=row.get("title"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: expected {{'id', 'text'[, 'title']}}") from exc
        if doc.id in seen:
            raise ValueError(f"{source}:{number}: duplicate document id {doc.id!r}")
        seen.add(doc.id)
        docs.append(doc)
    return tuple(docs)


def _read_queries(source: _Source) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, line in _lines(source):
        try:
            row: Any = json.loads(line)
            queries[str(row["id"])] = str(row["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: expected {{'id', 'text'}}") from exc
    return queries


def _read_qrels(source: _Source) -> dict[str, dict[str, int]]:
    """Read ``qid docid grade`` rows (tab/space separated), or TREC's ``qid 0 docid grade``."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(source):
        cols = line.split()
        if len(cols) == 4:  # TREC qrels carry an unused iteration column
            cols = [cols[0], cols[2], cols[3]]
        try:
            qid, docid, grade = cols[0], cols[1], int(cols[2])
        except (ValueError, IndexError) as exc:
            if number == 1:  # a header row such as "query_id doc_id grade"
                continue
            raise ValueError(f"{source}:{number}: expected 'qid docid grade'") from exc
        qrels.setdefault(qid, {})[docid] = grade
    return qrels


def _eval_set(name: str, directory: _Source) -> EvalSet:
    corpus = _read_corpus(directory / "corpus.jsonl")
    queries = _read_queries(directory / "queries.jsonl")
    qrels = _read_qrels(directory / "qrels.tsv")
    doc_ids = {d.id for d in corpus}
    unknown = sorted(
        {f"query {q}" for q in qrels if q not in queries}
        | {f"document {d}" for judged in qrels.values() for d in judged if d not in doc_ids}
    )
    if unknown:
        raise ValueError(f"{name}: qrels refer to unknown ids: {', '.join(unknown[:5])}")
    return EvalSet(name=name, corpus=corpus, queries=queries, qrels=qrels)


def load_eval_set(name: str = "eval_en") -> EvalSet:
    """Load a bundled evaluation set (``"eval_en"``: 35 English queries over 305 passages)."""
    _check_name(name, EVAL_SETS, "evaluation set")
    return _eval_set(name, _package_dir() / name)


def read_eval_set(directory: str | PathLike[str]) -> EvalSet:
    """Load your own evaluation set laid out like the bundled one.

    ``directory`` holds ``corpus.jsonl`` (``{"id", "text", "title"?}`` per line),
    ``queries.jsonl`` (``{"id", "text"}``) and ``qrels.tsv`` (``qid docid grade`` rows; a
    header row and TREC's four-column format are accepted).
    """
    path = Path(directory)
    return _eval_set(path.name, path)


def load_corpus(name: str) -> list[Document]:
    """Load a bundled corpus: ``"demo_en"`` (405 passages), ``"demo_zh"`` (307) or ``"eval_en"``."""
    _check_name(name, (*CORPORA, *EVAL_SETS), "corpus")
    base = _package_dir()
    source = base / name / "corpus.jsonl" if name in EVAL_SETS else base / f"{name}.jsonl"
    return list(_read_corpus(source))


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
