"""The sans-I/O core shared by both clients: plan, build, parse, merge and retry decisions.

Nothing here touches a socket or a clock; ``client.py`` moves the bytes and sleeps.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import prompts
from .config import RerankConfig
from .errors import RerankInputError, RerankResponseError, RerankStatusError
from .types import PreparedCall, RerankItem, RerankResult, ScoreResult, ServerInfo, Usage

__all__ = [
    "RETRY_STATUSES",
    "Batch",
    "Endpoint",
    "PreparedCall",
    "RerankEndpoint",
    "ScoreEndpoint",
    "merge_rankings",
    "new_request_id",
    "parse_error_message",
    "parse_rerank_batch",
    "parse_score_batch",
    "parse_server_info",
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
    texts: tuple[str, ...]


def new_request_id() -> str:
    """A fresh id for ``X-Request-Id``; vLLM makes it the engine's request id."""
    return uuid.uuid4().hex


def effective_mode(config: RerankConfig, info: ServerInfo | None) -> str:
    """``auto`` resolved: client-side Qwen3 formatting for Qwen3-Reranker models, else raw."""
    if config.prompt_mode != "auto":
        return config.prompt_mode
    qwen3 = prompts.is_qwen3_reranker(config.model or "") or (
        info is not None and info.is_qwen3_reranker
    )
    return "client" if qwen3 else "raw"


def check_input(query: object, documents: object) -> list[str]:
    """Validate the caller's input and return the documents as a list (never mutated)."""
    if not isinstance(query, str):
        raise RerankInputError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise RerankInputError("query is empty")
    if isinstance(documents, str | bytes) or not isinstance(documents, Iterable):
        raise RerankInputError(
            f"documents must be a sequence of str, got {type(documents).__name__}"
        )
    docs = list(documents)
    for position, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise RerankInputError(f"documents[{position}] must be a str, got {type(doc).__name__}")
    return docs


def prepare_call(
    mode: str,
    query: str,
    documents: Sequence[str],
    instruction: str | None,
    info: ServerInfo | None,
) -> PreparedCall:
    """Apply the prompt mode: what text goes on the wire for this query and these documents."""
    if mode == "client":
        found = prompts.find_template_marker([query, instruction or "", *documents])
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
            documents=tuple(prompts.format_document(d) for d in documents),
            instruction=None,
        )
    if mode == "server":
        if instruction and info is not None and not info.supports_instruction:
            raise RerankInputError(
                "this vLLM server ignores the 'instruction' field (needs vLLM >= 0.22); "
                "use prompt_mode='client' with a server started without a chat template"
            )
        return PreparedCall(query, tuple(documents), instruction or prompts.DEFAULT_INSTRUCTION)
    if instruction:
        # Dropping it silently would let a caller believe the ranking followed it.
        raise RerankInputError(
            "an instruction was given, but prompt_mode is 'raw' (this model takes none); "
            "instructions are for Qwen3-Reranker in prompt_mode 'client' or 'server'"
        )
    return PreparedCall(query, tuple(documents), None)


def plan_batches(documents: Sequence[str], max_batch_size: int | None) -> list[Batch]:
    """Split documents into consecutive batches of at most ``max_batch_size`` (None: one batch)."""
    size = max_batch_size or max(len(documents), 1)
    return [
        Batch(start, tuple(documents[start : start + size]))
        for start in range(0, len(documents), size)
    ]


def rerank_payload(
    model: str, call: PreparedCall, batch: Batch, top_n: int | None
) -> dict[str, Any]:
    """The JSON body of one ``/rerank`` request.

    Each batch returns its own best ``top_n``: the global best ``top_n`` are among them.
    ``top_n`` is never sent as null (vLLM answers 400); 0 means all.
    """
    payload: dict[str, Any] = {
        "model": model,
        "query": call.query,
        "documents": list(batch.texts),
        "top_n": min(top_n, len(batch.texts)) if top_n else 0,
    }
    if call.instruction is not None:
        payload["instruction"] = call.instruction
    return payload


def score_payload(model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]:
    """The JSON body of one ``/score`` request."""
    payload: dict[str, Any] = {
        "model": model,
        "queries": call.query,
        "documents": list(batch.texts),
    }
    if call.instruction is not None:
        payload["instruction"] = call.instruction
    return payload


def _usage(body: Mapping[str, Any]) -> Usage:
    usage = body.get("usage") or {}
    if not isinstance(usage, Mapping):
        return Usage()
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("total_tokens") or 0))


def _json_object(url: str, text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise RerankResponseError(
            f"POST {url} returned a body that is not JSON: {text[:200]!r}"
        ) from exc
    if not isinstance(body, dict):
        raise RerankResponseError(f"POST {url} returned JSON that is not an object: {text[:200]!r}")
    return body


def parse_rerank_batch(
    url: str, text: str, batch: Batch, originals: Sequence[str]
) -> tuple[list[RerankItem], Usage, str | None]:
    """Items of one batch, mapped by ``index`` (the echoed text may carry the template)."""
    body = _json_object(url, text)
    results = body.get("results")
    if not isinstance(results, list):
        raise RerankResponseError(f"POST {url} returned no 'results' list: {text[:200]!r}")
    items = []
    seen: set[int] = set()
    for result in results:
        try:
            local = int(result["index"])
            score = float(result["relevance_score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RerankResponseError(
                f"POST {url} returned a result without a valid index and relevance_score: "
                f"{result!r}"
            ) from exc
        if not 0 <= local < len(batch.texts) or local in seen:
            raise RerankResponseError(
                f"POST {url} returned index {local} for a batch of {len(batch.texts)} documents"
            )
        seen.add(local)
        index = batch.start + local
        items.append(RerankItem(index=index, score=score, document=originals[index]))
    model = body.get("model")
    return items, _usage(body), model if isinstance(model, str) else None


def parse_score_batch(url: str, text: str, batch: Batch) -> tuple[list[float], Usage, str | None]:
    """Scores of one ``/score`` batch in input order."""
    body = _json_object(url, text)
    data = body.get("data")
    if not isinstance(data, list) or len(data) != len(batch.texts):
        raise RerankResponseError(
            f"POST {url} returned {len(data) if isinstance(data, list) else 'no'} scores "
            f"for {len(batch.texts)} documents"
        )
    scores = [0.0] * len(batch.texts)
    try:
        for entry in data:
            scores[int(entry["index"])] = float(entry["score"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RerankResponseError(f"POST {url} returned a malformed score: {data!r:.200}") from exc
    model = body.get("model")
    return scores, _usage(body), model if isinstance(model, str) else None


def merge_rankings(parts: Iterable[list[RerankItem]], top_n: int | None) -> tuple[RerankItem, ...]:
    """One global ranking: best score first, ties broken by original index, cut to ``top_n``."""
    merged = sorted((item for part in parts for item in part), key=lambda i: (-i.score, i.index))
    return tuple(merged[:top_n] if top_n else merged)


def rerank_result(
    parts: Sequence[tuple[list[RerankItem], Usage, str | None]],
    top_n: int | None,
    model: str,
    request_id: str,
) -> RerankResult:
    """Merge the parsed batches of one call into its result."""
    usage = sum((p[1] for p in parts), Usage())
    served = next((p[2] for p in parts if p[2]), model)
    return RerankResult(merge_rankings((p[0] for p in parts), top_n), served, usage, request_id)


def score_result(
    parts: Sequence[tuple[list[float], Usage, str | None]], model: str, request_id: str
) -> ScoreResult:
    """Concatenate the parsed batches of one ``/score`` call, in input order."""
    scores = tuple(s for p in parts for s in p[0])
    usage = sum((p[1] for p in parts), Usage())
    served = next((p[2] for p in parts if p[2]), model)
    return ScoreResult(scores, served, usage, request_id)


def parse_error_message(text: str) -> str:
    """The server's own message from either vLLM error shape (0.10.2+ nested, 0.9 flat)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "message" in body:
            return str(body["message"])
        if "detail" in body:
            return str(body["detail"])
    return text.strip()[:500]


def status_error(url: str, status_code: int, text: str) -> RerankStatusError:
    """The typed error for a non-2xx answer, carrying the server's own message."""
    message = parse_error_message(text)
    return RerankStatusError(
        f"POST {url} returned {status_code}: {message}",
        url=url,
        status_code=status_code,
        server_message=message,
    )


def retry_delay(
    config: RerankConfig, attempt: int, retry_after: str | None = None, *, now: float | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    A server's ``Retry-After`` (seconds or an HTTP date) wins; otherwise exponential backoff
    with full jitter, so that many clients retrying together do not arrive together.
    """
    if retry_after:
        try:
            return max(0.0, min(float(retry_after), config.retry_backoff_max * 4))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(retry_after) if retry_after else None
            if parsed is not None:
                wall = time.time() if now is None else now
                return max(0.0, min(parsed.timestamp() - wall, config.retry_backoff_max * 4))
    ceiling = min(config.retry_backoff * 2 ** (attempt - 1), config.retry_backoff_max)
    return random.uniform(ceiling / 2, ceiling)


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"0.32.0+cpu"`` -> ``(0, 32, 0)``; None when unreadable."""
    match = _VERSION.search(text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def parse_server_info(
    version_text: str | None, models_text: str | None, wanted_model: str | None
) -> ServerInfo:
    """What ``/version`` and ``/v1/models`` say; missing or odd bodies leave fields unknown."""
    version = None
    if version_text:
        try:
            version = parse_version(str(json.loads(version_text).get("version", "")))
        except (ValueError, AttributeError):
            version = None
    model, root, max_len = wanted_model or "", None, None
    if models_text:
        try:
            entries = json.loads(models_text).get("data") or []
        except (ValueError, AttributeError):
            entries = []
        chosen = next(
            (e for e in entries if isinstance(e, dict) and e.get("id") == wanted_model),
            entries[0] if entries and isinstance(entries[0], dict) and not wanted_model else None,
        )
        if chosen:
            model = str(chosen.get("id") or model)
            root = chosen.get("root")
            max_len = chosen.get("max_model_len")
    return ServerInfo(
        version=version,
        model=model,
        model_root=str(root) if root else None,
        max_model_len=int(max_len) if isinstance(max_len, int) else None,
    )


def next_retry_delay(
    config: RerankConfig,
    attempt: int,
    retry_after: str | None,
    deadline_at: float | None,
    now: float,
) -> float | None:
    """The wait before retry ``attempt``, or None when retries or the deadline are spent."""
    if attempt > config.max_retries:
        return None
    delay = retry_delay(config, attempt, retry_after)
    if deadline_at is not None and now + delay >= deadline_at:
        return None
    return delay


def request_timeout(config: RerankConfig, deadline_at: float | None, now: float) -> float:
    """The per-request timeout: the configured one, shortened to what the deadline leaves."""
    if deadline_at is None:
        return config.timeout
    return max(0.0, min(config.timeout, deadline_at - now))


# A tokenizer token covers at least one UTF-8 byte (byte-level BPE) or one character
# (WordPiece, SentencePiece), so a text with no more bytes than the budget cannot exceed it
# and needs no /tokenize round trip.
def may_exceed(text: str, budget: int) -> bool:
    """Whether ``text`` might hold more than ``budget`` tokens."""
    return len(text.encode("utf-8")) > budget


# Room for the separator and end tokens a server adds between a query and a document.
TRUNCATION_MARGIN = 4


def document_budget(max_model_len: int, overhead_tokens: int) -> int:
    """Tokens left for one document once the query side and the template take theirs."""
    return max_model_len - overhead_tokens - TRUNCATION_MARGIN


def overhead_text(mode: str, query: str, instruction: str | None) -> tuple[str, str]:
    """The text around a document in the scored prompt: (before it, after it)."""
    if mode in ("client", "server"):
        return prompts.format_query(query, instruction) + "<Document>: ", prompts.QWEN3_SUFFIX
    return query, ""


def check_top_n(top_n: int | None) -> None:
    """``top_n`` is None (all) or a positive count."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise RerankInputError(f"top_n must be None or a positive int, got {top_n!r}")


def token_count(url: str, text: str) -> int:
    """The ``count`` of a ``/tokenize`` answer."""
    return len(tokens_of(url, text))


def tokens_of(url: str, text: str) -> list[int]:
    """The token ids of a ``/tokenize`` answer."""
    tokens = _json_object(url, text).get("tokens")
    if not isinstance(tokens, list):
        raise RerankResponseError(f"POST {url} returned no 'tokens' list: {text[:200]!r}")
    return [int(t) for t in tokens]


def detokenized(url: str, text: str) -> str:
    """The text of a ``/detokenize`` answer."""
    prompt = _json_object(url, text).get("prompt")
    if not isinstance(prompt, str):
        raise RerankResponseError(f"POST {url} returned no 'prompt' text: {text[:200]!r}")
    return prompt


R_co = TypeVar("R_co", covariant=True)


class Endpoint(Protocol[R_co]):
    """What differs between ``/rerank`` and ``/score``: the clients' call flow is the same."""

    @property
    def path(self) -> str: ...

    def payload(self, model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]: ...

    def parse(self, url: str, body: str, batch: Batch, originals: Sequence[str]) -> Any: ...

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> R_co: ...

    def empty(self, model: str, request_id: str) -> R_co: ...


@dataclass(frozen=True, slots=True)
class RerankEndpoint:
    """``/rerank`` (or ``/v1/rerank``, ``/v2/rerank``): a ranking cut to ``top_n``."""

    path: str
    top_n: int | None

    def payload(self, model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]:
        return rerank_payload(model, call, batch, self.top_n)

    def parse(
        self, url: str, body: str, batch: Batch, originals: Sequence[str]
    ) -> tuple[list[RerankItem], Usage, str | None]:
        return parse_rerank_batch(url, body, batch, originals)

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> RerankResult:
        return rerank_result(parts, self.top_n, model, request_id)

    def empty(self, model: str, request_id: str) -> RerankResult:
        return RerankResult((), model, Usage(), request_id)


@dataclass(frozen=True, slots=True)
class ScoreEndpoint:
    """``/score``: one score per document, in input order."""

    path: str = "/score"

    def payload(self, model: str, call: PreparedCall, batch: Batch) -> dict[str, Any]:
        return score_payload(model, call, batch)

    def parse(
        self, url: str, body: str, batch: Batch, originals: Sequence[str]
    ) -> tuple[list[float], Usage, str | None]:
        return parse_score_batch(url, body, batch)

    def result(self, parts: Sequence[Any], model: str, request_id: str) -> ScoreResult:
        return score_result(parts, model, request_id)

    def empty(self, model: str, request_id: str) -> ScoreResult:
        return ScoreResult((), model, Usage(), request_id)
