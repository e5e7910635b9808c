"""The sans-I/O core shared by both clients: check, plan, build, parse, merge, retry.

Nothing here touches a socket or a clock; ``_engine.py`` moves the bytes and sleeps.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import operator
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Protocol, TypeVar

from . import _json, prompts
from ._parse import finite_score, json_object, optional_str, strict_index, usage_tokens
from .config import RerankConfig
from .errors import RerankInputError, RerankResponseError, RerankStatusError
from .multimodal import ImageDocument, only_str, to_score_input
from .types import DocumentInput, PreparedCall, RerankItem, RerankResult, ScoreResult, Usage

__all__ = [
    "RETRY_STATUSES",
    "Batch",
    "Endpoint",
    "ModelEntry",
    "RerankEndpoint",
    "ScoreEndpoint",
    "check_input",
    "check_top_n",
    "merge_rankings",
    "new_request_id",
    "parse_error_message",
    "parse_models",
    "parse_version",
    "plan_batches",
    "prepare_call",
    "retry_delay",
    "status_error",
]

# 429 asks us to slow down; 502-504 are a proxy or a restarting server: all are worth
# another try. Other 4xx will fail the same way again.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Batch:
    """One request's share of a call: documents ``start`` to ``start + len(texts)``."""

    start: int
    texts: tuple[DocumentInput, ...]


def new_request_id() -> str:
    """A fresh id for ``X-Request-Id``; vLLM makes it the engine's request id."""
    return os.urandom(16).hex()  # as unique as uuid4().hex, a fifth of the cost


def _check_text(where: str, text: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8, so it could never be sent.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RerankInputError(
            f"{where} holds a lone surrogate {text[exc.start]!r} at character {exc.start}: "
            "it is not valid Unicode text and cannot be sent"
        ) from None


def check_input(
    query: object, documents: object, instruction: object = None
) -> list[DocumentInput]:
    """Validate the caller's input and return the documents as a new list (never mutated)."""
    if not isinstance(query, str):
        raise RerankInputError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise RerankInputError("query is empty")
    _check_text("query", query)
    if instruction is not None:
        if not isinstance(instruction, str):
            raise RerankInputError(
                f"instruction must be a str or None, got {type(instruction).__name__}"
            )
        _check_text("instruction", instruction)
    # A mapping would be ranked by its keys and a set in no stable order: neither has the
    # positions a ranking refers to.
    if type(documents) is not list and (
        isinstance(documents, str | bytes | bytearray | Mapping | Set)
        or not isinstance(documents, Iterable)
    ):
        raise RerankInputError(
            f"documents must be a sequence of str, got {type(documents).__name__}"
        )
    docs: list[Any] = list(documents)
    # Fast path for the common case: all str, all encodable (C-level passes: one type set,
    # one join, one encode).
    if only_str(docs):
        try:
            "".join(docs).encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return docs
    for position, doc in enumerate(docs):
        if isinstance(doc, ImageDocument):
            if doc.text is not None:
                _check_text(f"documents[{position}].text", doc.text)
            continue
        if not isinstance(doc, str):
            raise RerankInputError(
                f"documents[{position}] must be a str or an ImageDocument, got {type(doc).__name__}"
            )
        _check_text(f"documents[{position}]", doc)
    return docs


def check_top_n(top_n: object) -> None:
    """``top_n`` is None (all) or a positive count."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise RerankInputError(f"top_n must be None or a positive int, got {top_n!r:.60}")


def prepare_call(
    mode: str,
    query: str,
    documents: Sequence[DocumentInput],
    instruction: str | None,
    reads_instruction: bool,
) -> PreparedCall:
    """Apply the prompt mode: what text goes on the wire for this query and these documents."""
    if mode == "client":
        texts = [d for d in documents if isinstance(d, str)]
        if len(texts) != len(documents):
            raise RerankInputError(
                "documents with images need a server that formats the prompt "
                "(prompt_mode 'server': rerank-serve serves multimodal families so)"
            )
        found = prompts.find_template_marker([query, instruction or "", *texts])
        if found is not None:
            position, marker = found
            where = (
                "query"
                if position == 0
                else "instruction"
                if position == 1
                else f"documents[{position - 2}]"
            )
            raise RerankInputError(
                f"{where} already contains the Qwen3-Reranker template marker {marker!r}; "
                "in prompt_mode='client' the client applies the template itself. "
                "Send plain text, or use prompt_mode='raw' to send pre-formatted prompts."
            )
        return PreparedCall(
            query=prompts.format_query(query, instruction),
            documents=tuple(prompts.format_document(d) for d in texts),
            instruction=None,
            mode=mode,
        )
    if mode == "server":
        if instruction and not reads_instruction:
            raise RerankInputError(
                "this vLLM server ignores the 'instruction' field (needs vLLM >= 0.22); "
                "use prompt_mode='client' with a server started without a chat template"
            )
        # Without an instruction the server's template uses its own default.
        return PreparedCall(query, tuple(documents), instruction or None, mode)
    if instruction:
        # Dropping it silently would let a caller believe the ranking followed it.
        raise RerankInputError(
            "an instruction was given, but prompt_mode is 'raw' (this model takes none); "
            "instructions are for Qwen3-Reranker in prompt_mode 'client' or 'server'"
        )
    return PreparedCall(query, tuple(documents), None, mode)


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


def rerank_payload(
    model: str, call: PreparedCall, batch: Batch, top_n: int | None
) -> dict[str, Any]:
    """The JSON body of one rerank request.

    Each batch returns its own best ``top_n``: the global best ``top_n`` are among them.
    ``top_n`` is never sent as null (vLLM answers 400); 0 means all.
    """
    payload: dict[str, Any] = {
        "model": model,
        "query": call.query,
        "documents": wire_documents(batch.texts),
        "top_n": min(top_n, len(batch.texts)) if top_n else 0,
    }
    if call.instruction is not None:
        payload["instruction"] = call.instruction
    return payload


def wire_documents(documents: Sequence[DocumentInput]) -> Sequence[Any]:
    """Documents as vLLM takes them: text as is, images as ``{"content": [parts]}``."""
    if only_str(documents):
        return documents  # serialized straight away, never changed
    return [to_score_input(d) for d in documents]


def document_identity(document: DocumentInput) -> str:
    """A document as one string (for a cache key): its text, or its content parts as JSON."""
    if isinstance(document, str):
        return document
    return json.dumps(to_score_input(document), sort_keys=True, separators=(",", ":"))


def score_payload(model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]:
    """The JSON body of one ``/score`` request."""
    payload: dict[str, Any] = {
        "model": model,
        "queries": call.query,
        "documents": wire_documents(batch.texts),
    }
    if call.instruction is not None:
        payload["instruction"] = call.instruction
    return payload


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """The request body: UTF-8 JSON (input was checked to be encodable)."""
    return _json.dumps(payload)


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


def merge_rankings(parts: Iterable[list[RerankItem]], top_n: int | None) -> tuple[RerankItem, ...]:
    """One global ranking: best score first, ties broken by original index, cut to ``top_n``.

    Two stable sorts on C-level keys (index, then score descending) give that order.
    """
    by_index = sorted(chain.from_iterable(parts), key=_INDEX)
    merged = sorted(by_index, key=_SCORE, reverse=True)
    return tuple(merged[:top_n] if top_n else merged)


_INDEX = operator.itemgetter(0)
_SCORE = operator.itemgetter(1)


def parse_error_message(text: str) -> str:
    """The server's own message from either vLLM error shape (0.10.2+ nested, 0.9 flat)."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return text.strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        if "message" in body:
            return str(body["message"])[:500]
        if "detail" in body:
            return str(body["detail"])[:500]
    return text.strip()[:500]


def status_error(method: str, url: str, status_code: int, text: str) -> RerankStatusError:
    """The typed error for a non-2xx answer, carrying the server's own message."""
    message = parse_error_message(text)
    return RerankStatusError(
        f"{method} {url} returned {status_code}: {message}",
        url=url,
        status_code=status_code,
        server_message=message,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # "soon" and other garbage: fall back to our own backoff
        if parsed is None or parsed.tzinfo is None:
            return None
        wall = time.time() if now is None else now
        seconds = parsed.timestamp() - wall
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_delay(
    config: RerankConfig, attempt: int, retry_after: str | None = None, *, now: float | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    A server's ``Retry-After`` (seconds or an HTTP date) wins, capped; otherwise exponential
    backoff with full jitter, so that many clients retrying together do not arrive together.
    """
    asked = parse_retry_after(retry_after, now=now)
    if asked is not None:
        return min(asked, config.retry_backoff_max * 4)
    ceiling = min(config.retry_backoff * 2 ** (attempt - 1), config.retry_backoff_max)
    return random.uniform(ceiling / 2, ceiling)


def next_retry_delay(
    config: RerankConfig,
    attempt: int,
    retry_after: str | None,
    time_left: float | None,
) -> float | None:
    """The wait before retry ``attempt``, or None when retries or the deadline are spent."""
    if attempt > config.max_retries:
        return None
    delay = retry_delay(config, attempt, retry_after)
    if time_left is not None and delay >= time_left:
        return None
    return delay


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


# Room for tokens that merge or split differently where the query side meets a document.
TRUNCATION_MARGIN = 4
# What the server adds to a pair when it reported nothing: generous for special tokens.
UNKNOWN_ADDED_TOKENS = 8


def pair_sides(mode: str, query: str, instruction: str | None) -> tuple[str, str]:
    """Text on the query side of a pair and around each document, beyond what the server adds.

    In server mode the template's own text (with its default instruction) is in the server's
    measured added tokens; a custom instruction is counted on top of it, which over-counts by
    the default instruction's length and so only ever leaves more room than needed.
    """
    if mode == "client":
        return prompts.format_query(query, instruction), prompts.format_document("")
    if mode == "server":
        return query + (instruction or ""), ""
    return query, ""


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8: an upper bound of its tokens for every tokenizer vLLM uses.

    A token covers at least one byte (byte-level BPE) or one character (WordPiece,
    SentencePiece), so a text with no more bytes than a budget cannot exceed it.
    """
    return len(text.encode("utf-8"))


R_co = TypeVar("R_co", covariant=True)


class Endpoint(Protocol[R_co]):
    """What differs between rerank and score: the clients' call flow is the same."""

    @property
    def path(self) -> str: ...

    def payload(self, model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]: ...

    def parse(
        self, url: str, body: bytes | str, batch: Batch, originals: Sequence[DocumentInput]
    ) -> Any: ...

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> R_co: ...

    def empty(self, model: str, request_id: str) -> R_co: ...

    def every(self) -> Endpoint[R_co]: ...

    def scores(self, parts: Sequence[Any], count: int) -> list[float]: ...

    def from_scores(
        self,
        scores: Sequence[float],
        originals: Sequence[DocumentInput],
        model: str,
        usage: Usage,
        request_id: str,
    ) -> R_co: ...


def usage_and_model(
    parts: Sequence[tuple[Any, Usage, str | None]], model: str
) -> tuple[Usage, str]:
    """Summed usage of a call's parts, and the model the server says it used."""
    return _served(parts, model)


def _served(parts: Sequence[tuple[Any, Usage, str | None]], model: str) -> tuple[Usage, str]:
    usage = sum((p[1] for p in parts), Usage())
    return usage, next((p[2] for p in parts if p[2]), model)


@dataclass(frozen=True, slots=True)
class RerankEndpoint:
    """A rerank route (``/v2/rerank``, ``/rerank``, ``/v1/rerank``): a ranking cut to ``top_n``."""

    path: str
    top_n: int | None

    def payload(self, model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]:
        return rerank_payload(model, call, batch, self.top_n)

    def parse(
        self, url: str, body: bytes | str, batch: Batch, originals: Sequence[DocumentInput]
    ) -> tuple[list[RerankItem], Usage, str | None]:
        return parse_rerank_batch(url, body, batch, originals, self.top_n)

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> RerankResult:
        usage, served = _served(parts, model)
        items = merge_rankings((p[0] for p in parts), self.top_n)
        return RerankResult(items, served, usage, request_id)

    def empty(self, model: str, request_id: str) -> RerankResult:
        return RerankResult((), model, Usage(), request_id)

    def every(self) -> RerankEndpoint:
        """The same route asked for every score (a cache needs each pair's)."""
        return RerankEndpoint(self.path, None)

    def scores(self, parts: Sequence[Any], count: int) -> list[float]:
        by_index = {item.index: item.score for part in parts for item in part[0]}
        return [by_index[i] for i in range(count)]

    def from_scores(
        self,
        scores: Sequence[float],
        originals: Sequence[DocumentInput],
        model: str,
        usage: Usage,
        request_id: str,
    ) -> RerankResult:
        items = [RerankItem(i, s, originals[i]) for i, s in enumerate(scores)]
        return RerankResult(merge_rankings([items], self.top_n), model, usage, request_id)


@dataclass(frozen=True, slots=True)
class ScoreEndpoint:
    """``/score``: one score per document, in input order."""

    path: str = "/score"

    def payload(self, model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]:
        return score_payload(model, call, batch)

    def parse(
        self, url: str, body: bytes | str, batch: Batch, originals: Sequence[DocumentInput]
    ) -> tuple[list[float], Usage, str | None]:
        return parse_score_batch(url, body, batch)

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> ScoreResult:
        usage, served = _served(parts, model)
        return ScoreResult(tuple(s for p in parts for s in p[0]), served, usage, request_id)

    def empty(self, model: str, request_id: str) -> ScoreResult:
        return ScoreResult((), model, Usage(), request_id)

    def every(self) -> ScoreEndpoint:
        return self

    def scores(self, parts: Sequence[Any], count: int) -> list[float]:
        return [s for part in parts for s in part[0]]

    def from_scores(
        self,
        scores: Sequence[float],
        originals: Sequence[DocumentInput],
        model: str,
        usage: Usage,
        request_id: str,
    ) -> ScoreResult:
        return ScoreResult(tuple(scores), model, usage, request_id)
