"""Assertions shared by test files: what a well-formed ranking looks like."""

from __future__ import annotations

import math
from typing import Any


def assert_ranking(result: Any, documents: list[str], top_n: int | None = None) -> None:
    """``result`` ranks ``documents``: the right count of distinct in-range indices, each item's
    document the caller's, finite float scores in descending order."""
    n = len(documents) if top_n is None else min(top_n, len(documents))
    assert len(result.items) == n
    assert len(set(result.indices)) == n
    assert all(0 <= i < len(documents) for i in result.indices)
    assert all(item.document == documents[item.index] for item in result.items)
    assert all(type(s) is float and math.isfinite(s) for s in result.scores)
    assert result.scores == sorted(result.scores, reverse=True)
