"""TREC run files (``qid Q0 docid rank score tag``); TREC qrels are read by :mod:`.data`.

Read in trec_eval's order, and written so that every tool reads the order they were written in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

__all__ = ["read_trec_run", "write_trec_run"]


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
