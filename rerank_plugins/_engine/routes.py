"""What differs between a rerank and a score call: body, reply, merge (pure).

The engine's flow is the same for both: plan batches, send each, parse each reply into a
part, merge the parts into one result. An :data:`Endpoint` supplies the differing steps.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple, TypeAlias

from ..types import DocumentInput, PreparedCall, RerankItem, RerankResult, ScoreResult, Usage
from .wire import Batch, parse_rerank_batch, parse_score_batch, rerank_payload, score_payload

__all__ = [
    "Endpoint",
    "RerankEndpoint",
    "ScoreEndpoint",
    "Scored",
    "merge_rankings",
    "plan_batches",
    "routing_key",
    "served_usage",
]


def routing_key(query: str) -> str:
    """A short stable key of the query for a router's consistent hashing (no query text)."""
    return hashlib.sha256(query.encode("utf-8")).hexdigest()[:16]


def plan_batches(documents: Sequence[DocumentInput], max_batch_size: int | None) -> list[Batch]:
    """Split documents into consecutive batches of at most ``max_batch_size`` (None: one batch)."""
    size = max_batch_size or max(len(documents), 1)
    return [
        Batch(start, tuple(documents[start : start + size]))
        for start in range(0, len(documents), size)
    ]


def merge_rankings(parts: Iterable[list[RerankItem]], top_n: int | None) -> tuple[RerankItem, ...]:
    """One global ranking: best score first, ties broken by original index, cut to ``top_n``.

    Two stable sorts on C-level keys (index, then score descending) give that order.
    """
    by_index = sorted(chain.from_iterable(parts), key=_INDEX)
    merged = sorted(by_index, key=_SCORE, reverse=True)
    return tuple(merged[:top_n] if top_n else merged)


_INDEX = operator.itemgetter(0)
_SCORE = operator.itemgetter(1)


class Scored(NamedTuple):
    """Scores in the documents' order, the usage they cost and the model that served them."""

    scores: Sequence[float]
    usage: Usage
    model: str


def served_usage(parts: Sequence[tuple[Any, Usage, str | None]], model: str) -> tuple[Usage, str]:
    """Summed usage of a call's parts, and the model the server says it used."""
    usage = sum((p[1] for p in parts), Usage())
    return usage, next((p[2] for p in parts if p[2]), model)


@dataclass(frozen=True, slots=True)
class RerankEndpoint:
    """A rerank route (``/v2/rerank``, ``/rerank``, ``/v1/rerank``): a ranking cut to ``top_n``."""

    path: str
    top_n: int | None

    def payload(self, model: str, prepared: PreparedCall, batch: Batch) -> dict[str, Any]:
        return rerank_payload(model, prepared, batch, self.top_n)

    def parse(
        self, url: str, body: bytes | str, batch: Batch, originals: Sequence[DocumentInput]
    ) -> tuple[list[RerankItem], Usage, str | None]:
        return parse_rerank_batch(url, body, batch, originals, self.top_n)

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> RerankResult:
        usage, served = served_usage(parts, model)
        items = merge_rankings((p[0] for p in parts), self.top_n)
        return RerankResult(items, served, usage, request_id)

    def empty(self, model: str, request_id: str) -> RerankResult:
        return RerankResult((), model, Usage(), request_id)

    def uncut(self) -> RerankEndpoint:
        """The same route asked for every score, not cut to ``top_n`` (a cache needs each)."""
        return RerankEndpoint(self.path, None)

    def scores(self, parts: Sequence[Any], count: int) -> list[float]:
        by_index = {item.index: item.score for part in parts for item in part[0]}
        return [by_index[i] for i in range(count)]

    def from_scores(
        self, scored: Scored, originals: Sequence[DocumentInput], request_id: str
    ) -> RerankResult:
        items = [RerankItem(i, s, originals[i]) for i, s in enumerate(scored.scores)]
        ranking = merge_rankings([items], self.top_n)
        return RerankResult(ranking, scored.model, scored.usage, request_id)


@dataclass(frozen=True, slots=True)
class ScoreEndpoint:
    """``/score``: one score per document, in input order."""

    path: str = "/score"

    def payload(self, model: str, prepared: PreparedCall, batch: Batch) -> dict[str, Any]:
        return score_payload(model, prepared, batch)

    def parse(
        self, url: str, body: bytes | str, batch: Batch, originals: Sequence[DocumentInput]
    ) -> tuple[list[float], Usage, str | None]:
        return parse_score_batch(url, body, batch)

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> ScoreResult:
        usage, served = served_usage(parts, model)
        return ScoreResult(tuple(s for p in parts for s in p[0]), served, usage, request_id)

    def empty(self, model: str, request_id: str) -> ScoreResult:
        return ScoreResult((), model, Usage(), request_id)

    def uncut(self) -> ScoreEndpoint:
        return self

    def scores(self, parts: Sequence[Any], count: int) -> list[float]:
        return [s for part in parts for s in part[0]]

    def from_scores(
        self, scored: Scored, originals: Sequence[DocumentInput], request_id: str
    ) -> ScoreResult:
        return ScoreResult(tuple(scored.scores), scored.model, scored.usage, request_id)


# What differs between rerank and score; the engine's flow is the same for both. Each has
# path, payload, parse, result, empty, uncut, scores and from_scores.
Endpoint: TypeAlias = RerankEndpoint | ScoreEndpoint
