"""The wire format: request bodies, strict readers of every reply, and the JSON codec (pure).

Each reader takes the URL (for the message) and the body as received, checks every field it
uses (types, finite scores, indices in range and unique, counts) and raises
:class:`RerankResponseError` naming the field otherwise. Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import orjson

from ..errors import RerankResponseError
from ..multimodal import only_str, to_score_input
from ..types import DocumentInput, PreparedCall, RerankItem, Usage

__all__ = [
    "Batch",
    "ModelEntry",
    "decode_json",
    "detokenized",
    "encode_json",
    "json_object",
    "parse_models",
    "parse_rerank_batch",
    "parse_score_batch",
    "parse_version",
    "rerank_payload",
    "score_payload",
    "tokens_of",
]

# A 1,000-document call sends about 230 KB and reads about 300 KB back (vLLM echoes every
# document): the standard library takes about 1 ms to write and 1.7 ms to read those, orjson
# about 0.02 ms and 0.4 ms (``bench/``). Both names are orjson's own functions: no frame of
# ours per body. orjson rejects what the strict readers would (NaN, bad UTF-8, deep nesting)
# with a ``ValueError``.
encode_json = orjson.dumps
decode_json = orjson.loads


@dataclass(frozen=True, slots=True)
class Batch:
    """One request's share of a call: documents ``start`` to ``start + len(texts)``."""

    start: int
    texts: tuple[DocumentInput, ...]


# -- request bodies ----------------------------------------------------------------------


def rerank_payload(
    model: str, prepared: PreparedCall, batch: Batch, top_n: int | None
) -> dict[str, Any]:
    """The JSON body of one rerank request.

    Each batch returns its own best ``top_n``: the global best ``top_n`` are among them.
    ``top_n`` is never sent as null (vLLM answers 400); 0 means all.
    """
    payload: dict[str, Any] = {
        "model": model,
        "query": to_score_input(prepared.query, "query"),
        "documents": wire_documents(batch.texts),
        "top_n": min(top_n, len(batch.texts)) if top_n else 0,
    }
    if prepared.instruction is not None:
        payload["instruction"] = prepared.instruction
    return payload


def wire_documents(documents: Sequence[DocumentInput]) -> Sequence[Any]:
    """Documents as vLLM takes them: text as is, images as ``{"content": [parts]}``."""
    if only_str(documents):
        return documents  # serialized straight away, never changed
    return [to_score_input(d) for d in documents]


def score_payload(model: str, prepared: PreparedCall, batch: Batch) -> dict[str, Any]:
    """The JSON body of one ``/score`` request."""
    payload: dict[str, Any] = {
        "model": model,
        "queries": to_score_input(prepared.query, "query"),
        "documents": wire_documents(batch.texts),
    }
    if prepared.instruction is not None:
        payload["instruction"] = prepared.instruction
    return payload


# -- strict readers ----------------------------------------------------------------------


def _fail(url: str, message: str) -> RerankResponseError:
    return RerankResponseError(f"{url} returned {message}")


def json_object(url: str, text: bytes | str) -> dict[str, Any]:
    """The body (bytes as received, or text) as a JSON object."""
    try:
        body = decode_json(text)
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


def _usage(url: str, body: Mapping[str, Any]) -> Usage:
    tokens = usage_tokens(url, body)
    if tokens is None:
        return _billed_units(body)
    return Usage(*tokens)


def _billed_units(body: Mapping[str, Any]) -> Usage:
    """Usage from a Cohere-shaped reply (``meta.billed_units``, as LiteLLM answers), if any."""
    meta = body.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, Mapping) else None
    if not isinstance(billed, Mapping):
        return Usage()
    counts = [billed.get(k) for k in ("input_tokens", "total_tokens")]
    prompt, total = (c if type(c) is int and c >= 0 else None for c in counts)
    return Usage(prompt or total or 0, total or prompt or 0)


def _entries(url: str, body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    entries = body.get(key)
    if not isinstance(entries, list):
        raise RerankResponseError(f"{url} returned no '{key}' list: {entries!r:.100}")
    if set(map(type, entries)) <= _DICT:
        return entries
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise RerankResponseError(f"{url} returned {key}[{position}] = {entry!r:.60}")
    return [dict(entry) for entry in entries]


_DICT = frozenset({dict})


def _plain_indices(values: list[Any], size: int) -> bool:
    """Whether ``values`` are distinct ints in ``[0, size)`` (the fast check of a reply)."""
    return (
        set(map(type, values)) <= {int}
        and len(set(values)) == len(values)
        and (not values or (min(values) >= 0 and max(values) < size))
    )


def _plain_scores(values: list[Any]) -> bool:
    """Whether ``values`` are all finite JSON numbers (not bools); C-level passes only.

    A sum that overflows to infinity fails here although each score is finite: the slow
    path then checks each one.
    """
    return set(map(type, values)) <= {float, int} and math.isfinite(math.fsum(values))


def parse_rerank_batch(
    url: str, text: bytes | str, batch: Batch, originals: Sequence[DocumentInput], top_n: int | None
) -> tuple[list[RerankItem], Usage, str | None]:
    """Items of one batch, mapped by ``index`` (the echoed text may carry the template)."""
    body = json_object(url, text)
    results = _entries(url, body, "results")
    size = len(batch.texts)
    expected = min(top_n, size) if top_n else size
    # A gateway may ignore top_n and return every result: more is fine (the merge cuts),
    # fewer would drop documents silently.
    if not expected <= len(results) <= size:
        raise RerankResponseError(
            f"{url} returned {len(results)} results for {size} documents (expected {expected})"
        )
    indices: list[Any] = list(map(dict.get, results, repeat("index")))
    scores: list[Any] = list(map(dict.get, results, repeat("relevance_score")))
    if not (_plain_indices(indices, size) and _plain_scores(scores)):
        # Slow path, only to name the first bad field.
        seen: set[int] = set()
        for position, result in enumerate(results):
            strict_index(url, f"results[{position}].index", result.get("index"), size, seen)
            finite_score(url, f"results[{position}].relevance_score", result.get("relevance_score"))
    start = batch.start
    positions = [start + local for local in indices] if start else indices
    # tuple.__new__ over zipped fields builds each RerankItem without a Python-level call.
    items = list(
        map(
            tuple.__new__,
            repeat(RerankItem),
            zip(positions, map(float, scores), map(originals.__getitem__, positions), strict=True),
        )
    )
    return items, _usage(url, body), optional_str(url, body, "model")


def parse_score_batch(
    url: str, text: bytes | str, batch: Batch
) -> tuple[list[float], Usage, str | None]:
    """Scores of one ``/score`` batch in input order."""
    body = json_object(url, text)
    data = _entries(url, body, "data")
    if len(data) != len(batch.texts):
        raise RerankResponseError(
            f"{url} returned {len(data)} scores for {len(batch.texts)} documents"
        )
    scores = [0.0] * len(batch.texts)
    seen: set[int] = set()
    for position, entry in enumerate(data):
        index = strict_index(url, f"data[{position}].index", entry.get("index"), len(data), seen)
        scores[index] = finite_score(url, f"data[{position}].score", entry.get("score"))
    return scores, _usage(url, body), optional_str(url, body, "model")


# Bounded digit runs: int() of thousands of digits raises, and no version has them.
_VERSION = re.compile(r"(?<!\d)(\d{1,6})\.(\d{1,6})(?:\.(\d{1,6}))?(?!\d)")


def parse_version(url: str, text: bytes | str) -> tuple[int, ...] | None:
    """``{"version": "0.32.0+cpu"}`` -> ``(0, 32, 0)``; None when it names no version."""
    version = json_object(url, text).get("version")
    if not isinstance(version, str):
        raise RerankResponseError(f"{url} returned 'version' = {version!r:.60}, not a string")
    match = _VERSION.search(version)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One entry of ``/v1/models``: what the client uses of it."""

    id: str
    root: str | None
    max_model_len: int | None


def parse_models(url: str, text: bytes | str, wanted: str | None) -> ModelEntry | None:
    """The entry of ``wanted`` (else the first entry) in a ``/v1/models`` answer."""
    entries = _entries(url, json_object(url, text), "data")
    chosen: ModelEntry | None = None
    for position, entry in enumerate(entries):
        model_id = entry.get("id")
        if not isinstance(model_id, str):
            raise RerankResponseError(f"{url} returned data[{position}].id = {model_id!r:.60}")
        max_len = entry.get("max_model_len")
        if max_len is not None and (
            isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1
        ):
            raise RerankResponseError(
                f"{url} returned data[{position}].max_model_len = {max_len!r:.60}"
            )
        root = entry.get("root")
        current = ModelEntry(model_id, root if isinstance(root, str) else None, max_len)
        if model_id == wanted or (chosen is None and not wanted):
            chosen = current
    return chosen


def tokens_of(url: str, text: bytes | str) -> list[int]:
    """The token ids of a ``/tokenize`` answer."""
    tokens = json_object(url, text).get("tokens")
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
    ):
        raise RerankResponseError(f"{url} returned 'tokens' = {tokens!r:.80}, not token ids")
    return tokens


def detokenized(url: str, text: bytes | str) -> str:
    """The text of a ``/detokenize`` answer."""
    prompt = json_object(url, text).get("prompt")
    if not isinstance(prompt, str):
        raise RerankResponseError(f"{url} returned 'prompt' = {prompt!r:.60}, not text")
    return prompt
