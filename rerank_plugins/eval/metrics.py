"""Ranking metrics for graded relevance judgements: pure functions, no dependencies.

Conventions (those of ``trec_eval``, so figures match it, ``pytrec_eval``, ``ir_measures`` and
``ranx`` on the same ranking):

* the gain of a graded judgement is linear by default, ``gain = grade`` (``trec_eval``'s
  ``ndcg_cut``); ``gain="exponential"`` gives Burges et al.'s ``2**grade - 1`` (grade 3 -> 7,
  2 -> 3, 1 -> 1), used by some papers and libraries, where a highly relevant document
  outweighs several marginal ones. The discount is ``log2(rank + 1)`` either way;
* a document is relevant when its grade is > 0; unjudged documents count as grade 0;
* a ranking's repeated ids count once, at their first position (``trec_eval`` rejects
  duplicates; here they cannot change a figure).

Binary judgements (grades 0/1) give the same nDCG with either gain.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

__all__ = [
    "GAINS",
    "Gain",
    "dcg_at_k",
    "evaluate",
    "evaluate_per_query",
    "gain",
    "mean",
    "mrr",
    "ndcg_at_k",
    "recall_at_k",
]

D = TypeVar("D", bound=Hashable)
Q = TypeVar("Q", bound=Hashable)

Gain = Literal["linear", "exponential"]
GAINS: tuple[Gain, ...] = ("linear", "exponential")


def gain(grade: float, kind: Gain = "linear") -> float:
    """The gain of a judgement: ``grade`` (linear, trec_eval's) or ``2**grade - 1`` (exponential).

    Grades <= 0 gain nothing either way.
    """
    if kind not in GAINS:
        raise ValueError(f"gain must be 'linear' or 'exponential', got {kind!r}")
    if grade <= 0:
        return 0.0
    return float(grade) if kind == "linear" else 2.0**grade - 1.0


def _dedupe(ranked_ids: Iterable[D], k: int | None) -> list[D]:
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    seen: set[D] = set()
    out: list[D] = []
    for doc_id in ranked_ids:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
            if k is not None and len(out) == k:
                break
    return out


def _dcg(grades: Iterable[float], kind: Gain) -> float:
    return sum(gain(g, kind) / math.log2(rank + 1) for rank, g in enumerate(grades, start=1))


def dcg_at_k(
    ranked_ids: Sequence[D], relevance: Mapping[D, float], k: int, *, gain: Gain = "linear"
) -> float:
    """Discounted cumulative gain of the top ``k`` of ``ranked_ids``."""
    return _dcg((relevance.get(d, 0) for d in _dedupe(ranked_ids, k)), gain)


def ndcg_at_k(
    ranked_ids: Sequence[D], relevance: Mapping[D, float], k: int, *, gain: Gain = "linear"
) -> float:
    """Normalised DCG@k in [0, 1]: DCG of the ranking over DCG of the ideal ranking.

    The ideal ranking sorts every judged document by grade, whether or not it was retrieved.
    Returns 0.0 when no document is relevant (there is nothing to find). ``gain`` is
    ``"linear"`` (trec_eval's, the default) or ``"exponential"`` (``2**grade - 1``).
    """
    ideal = _dcg(sorted((g for g in relevance.values() if g > 0), reverse=True)[:k], gain)
    if ideal == 0.0:
        _dedupe((), k)  # still reject a bad k
        if gain not in GAINS:
            raise ValueError(f"gain must be 'linear' or 'exponential', got {gain!r}")
        return 0.0
    return dcg_at_k(ranked_ids, relevance, k, gain=gain) / ideal


def mrr(ranked_ids: Sequence[D], relevance: Mapping[D, float], k: int | None = None) -> float:
    """Reciprocal rank of the first relevant document (grade > 0) within the top ``k``.

    This is the per-query value; MRR is its :func:`mean` over queries. 0.0 when none is found.
    """
    for rank, doc_id in enumerate(_dedupe(ranked_ids, k), start=1):
        if relevance.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked_ids: Sequence[D], relevance: Mapping[D, float], k: int) -> float:
    """Share of the relevant documents (grade > 0) found in the top ``k``; 0.0 if none exist.

    On first-stage candidates this is the ceiling a reranker of those candidates can reach.
    """
    relevant = {d for d, g in relevance.items() if g > 0}
    found = sum(1 for d in _dedupe(ranked_ids, k) if d in relevant)
    return found / len(relevant) if relevant else 0.0


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; raises ``ValueError`` on no values rather than inventing a 0."""
    items = list(values)
    if not items:
        raise ValueError("mean of no values")
    return math.fsum(items) / len(items)


def evaluate_per_query(
    run: Mapping[Q, Sequence[D]],
    qrels: Mapping[Q, Mapping[D, float]],
    k: int = 10,
    *,
    gain: Gain = "linear",
) -> dict[Q, dict[str, float]]:
    """Score each judged query: ``{qid: {"ndcg@k", "mrr@k", "recall@k"}}``.

    Queries are those of ``qrels`` with at least one relevant document; a query missing from
    ``run`` counts as an empty ranking (``trec_eval -c``). Run entries without judgements are
    ignored. ``gain`` is the nDCG gain, linear (trec_eval's) by default.
    """
    out: dict[Q, dict[str, float]] = {}
    for qid, relevance in qrels.items():
        if not any(g > 0 for g in relevance.values()):
            continue
        ranked = run.get(qid, ())
        out[qid] = {
            f"ndcg@{k}": ndcg_at_k(ranked, relevance, k, gain=gain),
            f"mrr@{k}": mrr(ranked, relevance, k),
            f"recall@{k}": recall_at_k(ranked, relevance, k),
        }
    return out


def evaluate(
    run: Mapping[Q, Sequence[D]],
    qrels: Mapping[Q, Mapping[D, float]],
    k: int = 10,
    *,
    gain: Gain = "linear",
) -> dict[str, float]:
    """Mean nDCG@k, MRR@k and recall@k over the judged queries, plus ``"queries"`` (their count).

    Example: ``evaluate({"q1": ["d3", "d1"]}, {"q1": {"d1": 2}}, k=10)`` gives
    ``{"ndcg@10": 0.63..., "mrr@10": 0.5, "recall@10": 1.0, "queries": 1.0}``.
    """
    per_query = evaluate_per_query(run, qrels, k, gain=gain)
    if not per_query:
        raise ValueError("qrels hold no query with a relevant document")
    names = (f"ndcg@{k}", f"mrr@{k}", f"recall@{k}")
    report = {name: mean(scores[name] for scores in per_query.values()) for name in names}
    report["queries"] = float(len(per_query))
    return report
