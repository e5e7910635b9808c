"""Strict readers for every reply the clients accept: anything off-shape is a typed error.

Each reader takes the URL (for the message) and the body text, checks every field it uses
(types, finite scores, indices in range and unique, counts) and raises
:class:`RerankResponseError` naming the field otherwise. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import _json
from .errors import RerankResponseError

__all__ = [
    "finite_score",
    "json_object",
    "optional_str",
    "strict_index",
    "usage_tokens",
]


def _fail(url: str, message: str) -> RerankResponseError:
    return RerankResponseError(f"{url} returned {message}")


def json_object(url: str, text: bytes | str) -> dict[str, Any]:
    """The body (bytes as received, or text) as a JSON object."""
    try:
        body = _json.loads(text)
    except ValueError as exc:
        raise _fail(url, f"a body that is not JSON: {_head(text)!r}") from exc
    except RecursionError as exc:  # absurdly nested JSON
        raise _fail(url, "JSON nested too deeply to read") from exc
    if not isinstance(body, dict):
        raise _fail(url, f"JSON that is not an object: {_head(text)!r}")
    return body


def _head(text: bytes | str) -> str:
    """The start of a body, for a message."""
    if isinstance(text, bytes):
        return text[:200].decode("utf-8", "replace")
    return text[:200]


def strict_index(url: str, field: str, value: object, size: int, seen: set[int]) -> int:
    """An ``index`` that is a real int (not bool, not float), in ``[0, size)``, not seen yet."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(url, f"{field} = {value!r:.60}, not an integer")
    if not 0 <= value < size:
        raise _fail(url, f"{field} = {value} for {size} documents sent")
    if value in seen:
        raise _fail(url, f"{field} = {value} twice")
    seen.add(value)
    return value


def finite_score(url: str, field: str, value: object) -> float:
    """A score that is a JSON number (not bool, not a numeric string) and finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(url, f"{field} = {value!r:.60}, not a number")
    score = float(value)
    if not math.isfinite(score):
        raise _fail(url, f"{field} = {value!r}, not a finite number")
    return score


def optional_str(url: str, body: Mapping[str, Any], key: str) -> str | None:
    """A string field that may be missing or null."""
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _fail(url, f"'{key}' = {value!r:.60}, not a string")


def usage_tokens(url: str, body: Mapping[str, Any]) -> tuple[int, int] | None:
    """``usage`` as (prompt_tokens, total_tokens); None when the reply has no usage.

    Cohere-shaped replies (gateways such as LiteLLM) carry ``meta`` instead: that is no usage.
    """
    usage = body.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, Mapping):
        raise _fail(url, f"'usage' = {usage!r:.60}, not an object")
    counts = []
    for key in ("prompt_tokens", "total_tokens"):
        value = usage.get(key, 0)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(url, f"usage.{key} = {value!r:.60}, not a count")
        counts.append(value)
    return counts[0], counts[1]
