"""Long documents scored by their best chunk (``long_documents="chunk"``): the engine's MaxP step.

A document longer than the model's window is split into token windows that fit, each
overlapping the next by a quarter of a window (:data:`OVERLAP`), so that an answer cut by
one boundary lies whole in the next chunk. Every chunk is scored like a document; the
document gets its best chunk's score (MaxP, Dai & Callan 2019) and the result names that
chunk. The splitting and merging are pure; :func:`split` is the one step that asks the
server (``/tokenize`` once per long document, ``/detokenize`` once per chunk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ..types import Chunk, ChunkedRerankItem, DocumentInput, RerankResult, ScoreResult
from .routes import Endpoint, Scored

__all__ = ["OVERLAP", "ChunkPlan", "finish", "merge", "plan", "score_of_pieces", "split", "windows"]

OVERLAP = 0.25
"""The fraction of a chunk's tokens that the next chunk repeats."""

R = TypeVar("R")


def windows(length: int, size: int, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of at most ``size`` tokens that cover ``length`` tokens.

    Consecutive windows share ``int(size * overlap)`` tokens; the last window ends at
    ``length`` and is full-sized (it may share more with the one before), so no chunk is a
    short tail scored on a few words.
    """
    if size < 1:
        raise ValueError(f"a window needs at least one token, got size={size}")
    if length <= size:
        return [(0, length)]
    step = max(1, size - int(size * overlap))
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return [(start, start + size) for start in starts]


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """What a call scores instead of its documents: short ones whole, long ones as chunks.

    ``pieces[p]`` is scored for document ``owners[p]``; ``chunks[p]`` says which part of
    its document piece ``p`` is (only for the pieces of split documents).
    """

    pieces: list[DocumentInput]
    owners: list[int]
    chunks: dict[int, Chunk]

    def best(self, scores: Sequence[float], count: int) -> tuple[list[float], dict[int, Chunk]]:
        """Each document's best piece score (MaxP), and the winning chunk of split ones."""
        best: list[float | None] = [None] * count
        winner: dict[int, int] = {}
        for piece, (owner, score) in enumerate(zip(self.owners, scores, strict=True)):
            held = best[owner]
            if held is None or score > held:  # ties: the earlier chunk, the document's start
                best[owner] = score
                winner[owner] = piece
        chosen = {owner: self.chunks[p] for owner, p in winner.items() if p in self.chunks}
        return [cast(float, score) for score in best], chosen


def plan(documents: Sequence[DocumentInput], splits: dict[int, list[Chunk]]) -> ChunkPlan:
    """The plan scoring ``documents`` with those in ``splits`` replaced by their chunks."""
    pieces: list[DocumentInput] = []
    owners: list[int] = []
    chunks: dict[int, Chunk] = {}
    for index, document in enumerate(documents):
        for chunk in splits.get(index, ()):
            chunks[len(pieces)] = chunk
            pieces.append(chunk.text)
            owners.append(index)
        if index not in splits:
            pieces.append(document)
            owners.append(index)
    return ChunkPlan(pieces, owners, chunks)


async def split(
    documents: Sequence[DocumentInput],
    candidates: Sequence[int],
    budget: int,
    tokenize: Callable[[str], Awaitable[list[int]]],
    detokenize: Callable[[list[int]], Awaitable[str]],
    limiter: asyncio.Semaphore,
    gather: Callable[[Sequence[Coroutine[Any, Any, Any]]], Awaitable[list[Any]]],
) -> ChunkPlan | None:
    """Split the ``candidates`` (text documents that may be long) longer than ``budget`` tokens.

    None when none is: the call then goes as it would with truncation. Requests run at most
    as many at a time as ``limiter`` allows, under the call's deadline like all it does;
    ``gather`` is the engine's (the first failure cancels the rest).
    """
    splits: dict[int, list[Chunk]] = {}

    async def one(index: int) -> None:
        text = documents[index]
        assert isinstance(text, str)
        async with limiter:
            tokens = await tokenize(text)
        if len(tokens) <= budget:
            return
        spans = windows(len(tokens), budget)

        async def piece(start: int, end: int) -> str:
            async with limiter:
                return await detokenize(tokens[start:end])

        texts = await gather([piece(start, end) for start, end in spans])
        splits[index] = [
            Chunk(number, len(spans), start, end, text)
            for number, ((start, end), text) in enumerate(zip(spans, texts, strict=True))
        ]

    await gather([one(index) for index in candidates])
    return plan(documents, splits) if splits else None


def score_of_pieces(result: object, count: int) -> list[float]:
    """Every piece's score, in piece order, from the result of an all-scores call."""
    if isinstance(result, ScoreResult):
        return list(result.scores)
    by_index = {item.index: item.score for item in cast(RerankResult, result).items}
    return [by_index[i] for i in range(count)]


def merge(result: R, chosen: dict[int, Chunk]) -> R:
    """``result`` (ranked by the documents' best scores) with each split one's winning chunk."""
    if not isinstance(result, RerankResult) or not chosen:
        return result
    items: Any = tuple(
        ChunkedRerankItem(*item, chosen[item.index]) if item.index in chosen else item
        for item in result.items
    )
    return cast(R, RerankResult(items, result.model, result.usage, result.request_id))


def finish(
    endpoint: Endpoint,
    plan: ChunkPlan,
    scored: object,
    documents: Sequence[DocumentInput],
    request_id: str,
) -> Any:
    """The caller's result from ``scored`` (every piece's score, usage and model).

    Ranked (and cut to ``top_n``) by each document's best piece; ``usage`` is every piece's.
    """
    result_of_pieces = cast(RerankResult | ScoreResult, scored)
    best, chosen = plan.best(score_of_pieces(result_of_pieces, len(plan.pieces)), len(documents))
    pieces = Scored(best, result_of_pieces.usage, result_of_pieces.model)
    result = endpoint.from_scores(pieces, documents, request_id)
    return merge(result, chosen)
