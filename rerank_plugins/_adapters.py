"""Framework-free logic shared by the LlamaIndex and LangChain adapters.

Policy lives here (what text to send, what to keep, when to fail open, what metadata a
reranked copy carries); the adapters only translate their framework's objects to and from it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .client import AsyncRerankClient, RerankClient
from .errors import (
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankResponseError,
    RerankStatusError,
)
from .types import RerankResult

__all__ = [
    "ADDED_KEYS",
    "FAIL_OPEN_ERRORS",
    "ORIGINAL_INDEX_KEY",
    "RANK_KEY",
    "RELEVANCE_SCORE_KEY",
    "RERANKED_KEY",
    "RETRIEVAL_SCORE_KEY",
    "Placement",
    "RerankOptions",
    "arerank",
    "document_text",
    "fall_back",
    "missing_extra",
    "rerank",
    "rerank_metadata",
    "select",
]

logger = logging.getLogger("rerank_plugins")

RELEVANCE_SCORE_KEY = "relevance_score"
"""Metadata key of the rerank score on LangChain copies (LlamaIndex uses ``score``)."""
RETRIEVAL_SCORE_KEY = "retrieval_score"
"""Metadata key of the retriever's score on LlamaIndex copies, kept for comparison."""
RANK_KEY = "rerank_rank"
"""Metadata key of the position after reranking: 1 is the best."""
ORIGINAL_INDEX_KEY = "original_index"
"""Metadata key of the position in the list the adapter was given: 0 is the first."""
RERANKED_KEY = "reranked"
"""Metadata key that is False on the copies returned when the adapter failed open."""

# Failures of the service, not of the caller: worth degrading to the retriever's order.
# Input and config errors are bugs the caller must see, so they always raise.
FAIL_OPEN_ERRORS: tuple[type[RerankError], ...] = (
    RerankConnectionError,
    RerankStatusError,
    RerankResponseError,
)


def missing_extra(framework: str, extra: str, exc: ImportError) -> ImportError:
    """The error an adapter module raises when its framework is not installed."""
    error = ImportError(
        f"rerank_plugins.{extra} needs {framework}: pip install 'rerank-plugins[{extra}]'"
    )
    error.__cause__ = exc
    return error


@dataclass(frozen=True, slots=True)
class RerankOptions:
    """What an adapter keeps and how it behaves on failure; checked once, at construction."""

    top_n: int | None = None
    score_threshold: float | None = None
    min_keep: int = 1
    instruction: str | None = None
    fail_open: bool = False

    def __post_init__(self) -> None:
        if self.top_n is not None and (isinstance(self.top_n, bool) or self.top_n < 1):
            raise RerankConfigError(f"top_n must be None or >= 1, got {self.top_n!r}")
        if self.min_keep < 0:
            raise RerankConfigError(f"min_keep must be >= 0, got {self.min_keep!r}")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one input lands in the output; ``score`` is None when it was not reranked."""

    index: int
    rank: int
    score: float | None


def document_text(content: str, metadata: Mapping[str, Any], keys: Sequence[str] = ()) -> str:
    """The text sent for a document: chosen metadata as ``key: value`` lines, then content.

    The layout is LlamaIndex's default metadata template, so both frameworks send the same
    text for the same document. Keys missing from ``metadata`` are skipped.
    """
    lines = [f"{key}: {metadata[key]}" for key in keys if key in metadata]
    return "\n".join(lines) + "\n\n" + content if lines else content


def select(result: RerankResult, options: RerankOptions) -> list[Placement]:
    """Cut a ranking to ``top_n``, then to ``score_threshold`` but never below ``min_keep``."""
    items = list(result.items)[: options.top_n]
    if options.score_threshold is not None:
        above = [item for item in items if item.score >= options.score_threshold]
        items = above if len(above) >= options.min_keep else items[: options.min_keep]
    return [Placement(item.index, rank, item.score) for rank, item in enumerate(items, 1)]


def fall_back(count: int, options: RerankOptions, error: RerankError) -> list[Placement]:
    """Fail open (the first ``top_n`` inputs in their own order) or re-raise ``error``.

    The cut to ``top_n`` stays so a failed rerank cannot overflow the context budget the
    caller planned for; the retriever's order is the best ranking left.
    """
    if not options.fail_open or not isinstance(error, FAIL_OPEN_ERRORS):
        raise error
    kept = count if options.top_n is None else min(options.top_n, count)
    logger.warning(
        "rerank failed, failing open with %d of %d inputs in their original order: %s",
        kept,
        count,
        error,
    )
    return [Placement(index, index + 1, None) for index in range(kept)]


def rerank(
    client: RerankClient, query: str, texts: Sequence[str], options: RerankOptions
) -> list[Placement]:
    """Rerank with the sync client and apply the options; no request for no texts."""
    if not texts:
        return []
    try:
        result = client.rerank(query, texts, top_n=options.top_n, instruction=options.instruction)
    except RerankError as exc:
        return fall_back(len(texts), options, exc)
    return select(result, options)


async def arerank(
    client: AsyncRerankClient, query: str, texts: Sequence[str], options: RerankOptions
) -> list[Placement]:
    """Rerank with the async client and apply the options; no request for no texts."""
    if not texts:
        return []
    try:
        result = await client.rerank(
            query, texts, top_n=options.top_n, instruction=options.instruction
        )
    except RerankError as exc:
        return fall_back(len(texts), options, exc)
    return select(result, options)


def rerank_metadata(
    metadata: Mapping[str, Any], placement: Placement, **extra: Any
) -> dict[str, Any]:
    """A new metadata dict for a returned copy: the original entries, rank, position, flag.

    ``extra`` entries whose value is None are left out. Values are deep-copied (as LangChain's
    own rerankers do), so changing a nested value of a copy never reaches the caller's input.
    """
    added: dict[str, Any] = {
        RANK_KEY: placement.rank,
        ORIGINAL_INDEX_KEY: placement.index,
        RERANKED_KEY: placement.score is not None,
    }
    added.update((key, value) for key, value in extra.items() if value is not None)
    return {**copy.deepcopy(dict(metadata)), **added}


ADDED_KEYS = (RELEVANCE_SCORE_KEY, RETRIEVAL_SCORE_KEY, RANK_KEY, ORIGINAL_INDEX_KEY, RERANKED_KEY)
"""Every metadata key an adapter may add to a copy."""
