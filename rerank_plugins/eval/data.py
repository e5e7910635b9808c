"""Labelled retrieval data for the evaluation: BEIR folders, the package's layout, TREC files.

* BEIR layout: ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl``
  (``{"_id", "text"}``), ``qrels/<split>.tsv`` (``query-id corpus-id score`` with a header).
* The package's layout (``rerank_plugins/datasets/eval_en``): ``corpus.jsonl`` (``{"id",
  "title"?, "text"}``), ``queries.jsonl`` (``{"id", "text"}``), ``qrels.tsv``.
* Any ``.jsonl`` file may be stored gzipped as ``.jsonl.gz`` (the shipped corpora are).
* TREC files: runs ``qid Q0 docid rank score tag`` and qrels ``qid 0 docid grade``.

A set is found by name (``load_collection("medquad-liveqa")``), looked up in this order: an
existing path; ``$RERANK_DATA_DIR/<name>``; ``./data/<name>`` from the working directory; the
repository's ``data/<name>`` beside the package (a clone, or an editable install); the sets
bundled in the package (``eval_en``).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import IO, Any

from .. import datasets

__all__ = [
    "DATA_DIR_ENV",
    "Collection",
    "load_collection",
    "locate_collection",
    "read_trec_qrels",
    "read_trec_run",
    "write_trec_run",
]

DATA_DIR_ENV = "RERANK_DATA_DIR"
"""Environment variable naming a folder of sets, each in a sub-folder named after the set."""

# rerank_plugins/eval/data.py -> the repository root (a clone, or an editable install).
_REPO_DATA = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class Collection:
    """A corpus (ids and the text a reader sees), queries and graded judgements."""

    name: str
    doc_ids: tuple[str, ...]
    texts: tuple[str, ...]
    """Title and text as one passage, in corpus order (what BM25 and the reranker see)."""
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]] = field(repr=False)
    source: str = ""
    """Where it was read from, for the report."""

    def judged_queries(self) -> list[str]:
        """Query ids with text and at least one relevant (grade > 0) document, in file order."""
        return [qid for qid in self.queries if any(g > 0 for g in self.qrels.get(qid, {}).values())]


def _jsonl_file(folder: Path, stem: str) -> Path:
    """``folder/stem.jsonl``, or its gzipped twin ``stem.jsonl.gz`` when only that exists."""
    plain = folder / f"{stem}.jsonl"
    packed = folder / f"{stem}.jsonl.gz"
    return packed if packed.is_file() and not plain.is_file() else plain


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected an object")
            rows.append(row)
    return rows


def _row_id(row: Mapping[str, Any], path: Path) -> str:
    value = row.get("_id", row.get("id"))
    if value is None:
        raise ValueError(f"{path}: a row has neither '_id' nor 'id'")
    return str(value)


def read_trec_qrels(path: str | PathLike[str]) -> dict[str, dict[str, int]]:
    """Read qrels: TREC's ``qid 0 docid grade`` or BEIR's ``query-id corpus-id score``.

    A header row is skipped; grades are integers (negative grades count as not relevant).
    """
    source = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with source.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) == 4:
                cols = [cols[0], cols[2], cols[3]]
            try:
                qid, docid, grade = cols[0], cols[1], int(float(cols[2]))
            except (ValueError, IndexError) as exc:
                if number == 1:  # header
                    continue
                raise ValueError(f"{source}:{number}: expected 'qid [0] docid grade'") from exc
            qrels.setdefault(qid, {})[docid] = grade
    return qrels


def read_trec_run(path: str | PathLike[str]) -> dict[str, list[str]]:
    """Read a TREC run (``qid Q0 docid rank score tag``) as ``{qid: [docid, ...]}``, best first.

    Ordered as ``trec_eval`` orders it: by score, descending, ties by docid descending (the
    rank column is ignored, as trec_eval ignores it).
    """
    source = Path(path)
    rows: dict[str, list[tuple[float, str]]] = {}
    with source.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 6:
                raise ValueError(f"{source}:{number}: expected 'qid Q0 docid rank score tag'")
            try:
                score = float(cols[4])
            except ValueError as exc:
                raise ValueError(f"{source}:{number}: score {cols[4]!r} is not a number") from exc
            rows.setdefault(cols[0], []).append((score, cols[2]))
    return {qid: [d for _, d in sorted(items, reverse=True)] for qid, items in rows.items()}


def write_trec_run(
    path: str | PathLike[str],
    run: Mapping[str, Sequence[tuple[str, float]]],
    tag: str,
) -> Path:
    """Write ``{qid: [(docid, score), ...]}`` (best first) as a TREC run file.

    trec_eval orders by score, not rank: where a score does not fall below the one before it
    (ties), it is written a hair (1e-6 relative) lower, so every tool reads the same order.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    safe_tag = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in tag) or "run"
    lines: list[str] = []
    for qid, ranked in run.items():
        previous = math.inf
        for rank, (docid, score) in enumerate(ranked, start=1):
            value = float(score)
            if value >= previous:
                value = previous - max(abs(previous) * 1e-6, 1e-6)
            previous = value
            lines.append(f"{qid} Q0 {docid} {rank} {value:.9g} {safe_tag}\n")
    target.write_text("".join(lines), encoding="utf-8")
    return target


def _beir(folder: Path, split: str | None) -> Collection:
    qrels_dir = folder / "qrels"
    splits = sorted(p.stem for p in qrels_dir.glob("*.tsv"))
    if not splits:
        raise ValueError(f"{qrels_dir} holds no .tsv qrels")
    if split is None:
        split = "test" if "test" in splits else splits[0]
    if split not in splits:
        raise ValueError(f"no split {split!r} in {qrels_dir} (found: {', '.join(splits)})")
    corpus_file = _jsonl_file(folder, "corpus")
    queries_file = _jsonl_file(folder, "queries")
    corpus = _jsonl(corpus_file)
    doc_ids = tuple(_row_id(row, corpus_file) for row in corpus)
    texts = tuple(
        datasets.Document(i, str(row.get("text", "")), row.get("title") or None).full_text
        for i, row in zip(doc_ids, corpus, strict=True)
    )
    queries = {_row_id(row, queries_file): str(row["text"]) for row in _jsonl(queries_file)}
    qrels = read_trec_qrels(qrels_dir / f"{split}.tsv")
    return Collection(
        f"{folder.name} ({split})", doc_ids, texts, queries, qrels, source=f"BEIR folder {folder}"
    )


def _from_eval_set(eval_set: datasets.EvalSet, source: str) -> Collection:
    return Collection(
        eval_set.name,
        tuple(d.id for d in eval_set.corpus),
        tuple(d.full_text for d in eval_set.corpus),
        dict(eval_set.queries),
        {q: dict(j) for q, j in eval_set.qrels.items()},
        source=source,
    )


def _candidates(name: str) -> list[Path]:
    """The folders a set called ``name`` may live in, in lookup order (see the module doc)."""
    places = [Path(name)]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        places.append(Path(env) / name)
    places.append(Path.cwd() / "data" / name)
    places.append(_REPO_DATA / name)
    return places


def locate_collection(source: str | PathLike[str]) -> Path | str:
    """Where ``source`` is read from: a folder, or the name of a set bundled in the package.

    Raises:
        ValueError: nothing was found; the message names every place looked in.

    """
    places = _candidates(os.fspath(source))
    for place in places:
        if place.is_dir():
            return place
    if isinstance(source, str) and source in datasets.EVAL_SETS:
        return source
    looked = "; ".join(str(p) for p in dict.fromkeys(places))
    shipped = sorted(
        {
            p.name
            for base in (Path.cwd() / "data", _REPO_DATA)
            if base.is_dir()
            for p in base.iterdir()
            if (p / "qrels").is_dir()
        }
    )
    known = ", ".join([*shipped, *datasets.EVAL_SETS])
    raise ValueError(
        f"no data set {os.fspath(source)!r}: not a folder, looked in {looked} (and "
        f"${DATA_DIR_ENV} when set); sets found by name: {known}"
    )


def load_collection(source: str | PathLike[str], split: str | None = None) -> Collection:
    """Load a labelled set: a folder, or a name such as ``"medquad-liveqa"`` or ``"eval_en"``.

    A name is looked up as the module doc says; a folder is in BEIR layout (``qrels/``) or the
    package's (``qrels.tsv``), its ``.jsonl`` files plain or gzipped.

    Raises:
        ValueError: the set is not found (the message names where it looked), the folder is
            in neither layout, or a file is malformed.

    """
    found = locate_collection(source)
    if isinstance(found, str):
        return _from_eval_set(datasets.load_eval_set(found), f"bundled set {found}")
    folder = found
    if (folder / "qrels").is_dir():
        return _beir(folder, split)
    if (folder / "qrels.tsv").is_file():
        return _from_eval_set(datasets.read_eval_set(folder), f"folder {folder}")
    raise ValueError(
        f"{folder}: expected corpus.jsonl[.gz], queries.jsonl and qrels/*.tsv (BEIR) or qrels.tsv"
    )
