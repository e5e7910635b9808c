"""Labelled retrieval data: one model (:class:`EvalSet`), one JSONL reader, one qrels reader.

Two folder layouts are read, their ``.jsonl`` files plain or gzipped (``.jsonl.gz``):

* BEIR: ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl`` (``{"_id",
  "text"}``), ``qrels/<split>.tsv`` (``query-id corpus-id score`` with a header);
* the package's (``rerank_plugins/datasets/eval_en``): the same files with ``"id"`` for
  ``"_id"``, and one ``qrels.tsv``.

A set is found by name (``load_collection("medquad-liveqa")``), looked up in this order: an
existing path; ``$RERANK_DATA_DIR/<name>``; ``data/<name>`` in the working directory or the
nearest folder above it that has a ``data/`` (anywhere in a clone); the repository's
``data/<name>`` beside the package (an editable install); the sets bundled in the package
(``eval_en``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import IO, Any

__all__ = [
    "BUNDLED_SETS",
    "DATA_DIR_ENV",
    "Collection",
    "Document",
    "EvalSet",
    "bundled_set",
    "load_collection",
    "locate_collection",
    "read_corpus",
    "read_eval_set",
    "read_jsonl",
    "read_trec_qrels",
    "shipped_set_names",
]

DATA_DIR_ENV = "RERANK_DATA_DIR"
"""Environment variable naming a folder of sets, each in a sub-folder named after the set."""
BUNDLED_SETS = ("eval_en",)
"""Sets shipped inside the package (``rerank_plugins/datasets/<name>``)."""

# rerank_plugins/eval/data.py -> the repository root (a clone, or an editable install).
_REPO_DATA = Path(__file__).resolve().parents[2] / "data"
_ENDS_CJK = re.compile(r"[\u3400-\u9fff]$")

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
        if _ENDS_CJK.search(self.title):
            return f"{self.title}。{self.text}"
        return f"{self.title}. {self.text}"


@dataclass(frozen=True)
class EvalSet:
    """A labelled retrieval set: corpus, queries (id -> text), qrels (qid -> docid -> grade).

    Grades are integers; > 0 is relevant (the bundled ``eval_en`` runs 0-3: 3 answers the
    query fully, 2 substantially, 1 is related background, 0 is judged off topic).
    """

    name: str
    corpus: tuple[Document, ...]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]] = field(repr=False)
    source: str = ""
    """Where it was read from, for the report."""

    @cached_property
    def doc_ids(self) -> tuple[str, ...]:
        """Document ids in corpus order."""
        return tuple(d.id for d in self.corpus)

    @cached_property
    def texts(self) -> tuple[str, ...]:
        """Title and text as one passage, in corpus order (what BM25 and the reranker see)."""
        return tuple(d.full_text for d in self.corpus)

    def judged_queries(self) -> list[str]:
        """Query ids with text and at least one relevant (grade > 0) document, in file order."""
        return [qid for qid in self.queries if any(g > 0 for g in self.qrels.get(qid, {}).values())]


Collection = EvalSet
"""The name the evaluation used for :class:`EvalSet`; the same class."""


def _lines(source: _Source) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines, ``#`` comments skipped; ``.gz`` files are decompressed."""
    with source.open("rb") as raw:
        packed = source.name.endswith(".gz")
        with (
            gzip.open(raw, "rt", encoding="utf-8") if packed else io.TextIOWrapper(raw, "utf-8")
        ) as text:
            yield from _numbered(text)


def _numbered(text: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text, start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def read_jsonl(source: _Source) -> Iterator[tuple[int, dict[str, Any]]]:
    """Numbered JSON objects of a ``.jsonl`` or ``.jsonl.gz`` file (blank and ``#`` lines skipped).

    Raises:
        ValueError: a line is not a JSON object (the message names the file and line).

    """
    for number, line in _lines(source):
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{source}:{number}: expected a JSON object")
        yield number, row


def read_trec_qrels(path: str | PathLike[str] | Traversable) -> dict[str, dict[str, int]]:
    """Read qrels, tab or space separated: ``qid docid grade`` or TREC's ``qid 0 docid grade``.

    BEIR's ``qrels/<split>.tsv`` is the first form with a header.

    Lenient where files differ: a header row (a first line whose grade is not a number) and
    ``#`` comment lines are skipped, and a grade written as a float (``2.0``) is read as the
    integer it holds. Negative grades count as not relevant.

    Raises:
        ValueError: a later line is not ``qid [0] docid grade``.

    """
    source = path if isinstance(path, Traversable) else Path(path)
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for number, line in _lines(source):
        cols = line.split()
        if len(cols) == 4:  # TREC qrels carry an unused iteration column
            cols = [cols[0], cols[2], cols[3]]
        try:
            if len(cols) != 3:
                raise ValueError(f"{len(cols)} columns")
            qid, docid, grade = cols[0], cols[1], int(float(cols[2]))
        except ValueError as exc:
            if first:  # a header such as "query-id corpus-id score"
                first = False
                continue
            raise ValueError(f"{source}:{number}: expected 'qid [0] docid grade'") from exc
        first = False
        qrels.setdefault(qid, {})[docid] = grade
    return qrels


def _pick(folder: _Source, stem: str) -> _Source:
    """``folder/stem.jsonl``, or its gzipped twin ``stem.jsonl.gz`` when only that exists."""
    plain = folder / f"{stem}.jsonl"
    packed = folder / f"{stem}.jsonl.gz"
    return packed if packed.is_file() and not plain.is_file() else plain


def _row_id(row: Mapping[str, Any], source: _Source, number: int) -> str:
    value = row.get("_id", row.get("id"))
    if value is None:
        raise ValueError(f"{source}:{number}: a row has neither '_id' nor 'id'")
    return str(value)


def read_corpus(source: _Source) -> tuple[Document, ...]:
    """Documents of a corpus ``.jsonl[.gz]`` (``{"_id" or "id", "text", "title"?}``), ids unique."""
    docs: list[Document] = []
    seen: set[str] = set()
    for number, row in read_jsonl(source):
        doc_id = _row_id(row, source, number)
        if "text" not in row:
            raise ValueError(f"{source}:{number}: expected {{'_id' or 'id', 'text'[, 'title']}}")
        if doc_id in seen:
            raise ValueError(f"{source}:{number}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        docs.append(Document(doc_id, str(row["text"]), row.get("title") or None))
    return tuple(docs)


def _read_queries(source: _Source) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, row in read_jsonl(source):
        if "text" not in row:
            raise ValueError(f"{source}:{number}: expected {{'_id' or 'id', 'text'}}")
        queries[_row_id(row, source, number)] = str(row["text"])
    return queries


def _qrels_file(folder: _Source, split: str | None) -> tuple[_Source, str | None]:
    """The package layout's ``qrels.tsv``, or BEIR's ``qrels/<split>.tsv`` (default: test)."""
    if (folder / "qrels.tsv").is_file():
        return folder / "qrels.tsv", None
    qrels_dir = folder / "qrels"
    splits = sorted(p.name[:-4] for p in qrels_dir.iterdir() if p.name.endswith(".tsv"))
    if not splits:
        raise ValueError(f"{qrels_dir} holds no .tsv qrels")
    if split is None:
        split = "test" if "test" in splits else splits[0]
    if split not in splits:
        raise ValueError(f"no split {split!r} in {qrels_dir} (found: {', '.join(splits)})")
    return qrels_dir / f"{split}.tsv", split


def read_eval_set(
    folder: str | PathLike[str] | Traversable,
    split: str | None = None,
    *,
    name: str | None = None,
    source: str | None = None,
) -> EvalSet:
    """Read a set in either layout (see the module doc) from ``folder``.

    ``split`` picks BEIR's ``qrels/<split>.tsv`` (default ``test``, else the first); a BEIR
    set is named ``"<folder> (<split>)"``. The package's layout is checked strictly: its qrels
    may name only known queries and documents (BEIR sets often judge documents they lack).

    Raises:
        ValueError: the folder is in neither layout, or a file is malformed.

    """
    base = folder if isinstance(folder, Traversable) else Path(folder)
    if not ((base / "qrels.tsv").is_file() or (base / "qrels").is_dir()):
        raise ValueError(
            f"{base}: expected corpus.jsonl[.gz], queries.jsonl and qrels/*.tsv (BEIR) or qrels.tsv"
        )
    qrels_source, used_split = _qrels_file(base, split)
    corpus = read_corpus(_pick(base, "corpus"))
    queries = _read_queries(_pick(base, "queries"))
    qrels = read_trec_qrels(qrels_source)
    if used_split is None:
        doc_ids = {d.id for d in corpus}
        unknown = sorted(
            {f"query {q}" for q in qrels if q not in queries}
            | {f"document {d}" for judged in qrels.values() for d in judged if d not in doc_ids}
        )
        if unknown:
            raise ValueError(f"{base.name}: qrels refer to unknown ids: {', '.join(unknown[:5])}")
    label = name or (base.name if used_split is None else f"{base.name} ({used_split})")
    where = source or (f"BEIR folder {base}" if used_split else f"folder {base}")
    return EvalSet(label, corpus, queries, qrels, source=where)


def bundled_set(name: str) -> EvalSet:
    """A set shipped inside the package, by name (``"eval_en"``)."""
    if name not in BUNDLED_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; bundled: {', '.join(BUNDLED_SETS)}")
    folder = files("rerank_plugins") / "datasets" / name
    return read_eval_set(folder, name=name, source=f"bundled set {name}")


def _candidates(name: str) -> list[tuple[Path, str]]:
    """Folders a set called ``name`` may live in, in lookup order, each with how to name it.

    The names say which rule found the set without the machine's paths (a report is shared).
    """
    places = [(Path(name), "")]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        places.append((Path(env) / name, f"${DATA_DIR_ENV}/{name}"))
    data = _nearest_data_dir()
    places.append((data / name, f"{os.path.relpath(data)}/{name}"))
    places.append((_REPO_DATA / name, f"the repository's data/{name}"))
    return places


def _nearest_data_dir() -> Path:
    """``data/`` in the working directory, or in the nearest folder above it that has one.

    So a set is found by name from anywhere in a clone (a notebook runs in ``notebooks/``),
    whether the package is installed from it or not.
    """
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "data").is_dir():
            return folder / "data"
    return cwd / "data"


def shipped_set_names() -> list[str]:
    """Names of the sets in the nearest ``data/`` and the repository's, then the bundled ones."""
    found = {
        p.name
        for base in (_nearest_data_dir(), _REPO_DATA)
        if base.is_dir()
        for p in base.iterdir()
        if (p / "qrels").is_dir() or (p / "qrels.tsv").is_file()
    }
    return [*sorted(found), *BUNDLED_SETS]


def _locate(source: str | PathLike[str]) -> tuple[Path | str, str]:
    places = _candidates(os.fspath(source))
    for place, label in places:
        if place.is_dir():
            return place, label
    if isinstance(source, str) and source in BUNDLED_SETS:
        return source, f"bundled set {source}"
    looked = "; ".join(str(p) for p in dict.fromkeys(p for p, _ in places))
    raise ValueError(
        f"no data set {os.fspath(source)!r}: not a folder, looked in {looked} (and "
        f"${DATA_DIR_ENV}/<name> when set); sets found by name: {', '.join(shipped_set_names())}"
    )


def locate_collection(source: str | PathLike[str]) -> Path | str:
    """Where ``source`` is read from: a folder, or the name of a set bundled in the package.

    Raises:
        ValueError: nothing was found; the message names every place looked in.

    """
    return _locate(source)[0]


def load_collection(source: str | PathLike[str], split: str | None = None) -> EvalSet:
    """Load a labelled set: a folder, or a name such as ``"medquad-liveqa"`` or ``"eval_en"``.

    A name is looked up as the module doc says; a folder is in BEIR layout (``qrels/``) or the
    package's (``qrels.tsv``), its ``.jsonl`` files plain or gzipped. The set's ``source``
    says which rule found it (``"./data/medquad-liveqa"``), or the folder given.

    Raises:
        ValueError: the set is not found (the message names where it looked), the folder is
            in neither layout, or a file is malformed.

    """
    found, label = _locate(source)
    if isinstance(found, str):
        return bundled_set(found)
    return read_eval_set(found, split, source=label or None)
