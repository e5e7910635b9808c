"""A call's arguments, checked in the caller's thread before anything is sent.

Pure but for :func:`new_request_id` (``os.urandom``), the default of a call's request id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Set
from typing import Any

from ..config import RerankConfig
from ..errors import RerankInputError
from ..multimodal import (
    ImageDocument,
    RerankInputItem,
    check_images_allowed,
    has_images,
    only_str,
    to_score_input,
)
from ..types import DocumentInput
from .routes import Endpoint, RerankEndpoint, ScoreEndpoint

__all__ = [
    "CheckedCall",
    "check_input",
    "check_query",
    "check_top_n",
    "rerank_call",
    "score_call",
]


class CheckedCall:
    """One call's checked arguments: what :meth:`Engine.execute` takes."""

    __slots__ = ("docs", "endpoint", "images", "instruction", "query", "request_id")

    def __init__(
        self,
        endpoint: Endpoint,
        query: object,
        documents: object,
        instruction: object,
        request_id: object,
    ) -> None:
        self.endpoint = endpoint
        self.query = check_query(query)
        self.docs = check_input(documents, instruction)
        self.images = has_images(self.query, self.docs)
        self.instruction: str | None = instruction  # type: ignore[assignment]
        if request_id is not None and (
            not isinstance(request_id, str) or not request_id.isascii() or not request_id
        ):
            raise RerankInputError(f"request_id must be a non-empty ASCII str, got {request_id!r}")
        self.request_id: str = request_id or new_request_id()


def rerank_call(
    config: RerankConfig,
    query: object,
    documents: object,
    top_n: object,
    instruction: object,
    request_id: object,
) -> CheckedCall:
    """A rerank call's arguments, checked."""
    check_top_n(top_n)
    endpoint = RerankEndpoint(config.route, top_n)  # type: ignore[arg-type]
    return _images_checked(config, CheckedCall(endpoint, query, documents, instruction, request_id))


def score_call(
    config: RerankConfig, query: object, documents: object, instruction: object, request_id: object
) -> CheckedCall:
    """A score call's arguments, checked."""
    call = CheckedCall(ScoreEndpoint(config.score_path), query, documents, instruction, request_id)
    return _images_checked(config, call)


def _images_checked(config: RerankConfig, call: CheckedCall) -> CheckedCall:
    """With ``images="error"``, images for a text-only family fail here, before any request."""
    if config.model and call.images and config.images == "error":
        check_images_allowed(call.query, call.docs, model_name=config.model, unknown_ok=False)
    return call


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


def check_input(documents: object, instruction: object = None) -> list[DocumentInput]:
    """Validate the instruction and documents; the documents as a new list (never mutated)."""
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


def check_query(query: object) -> RerankInputItem:
    """The query, checked: a non-empty str, an :class:`ImageDocument` or ``{"content": [...]}``.

    A mapping comes back as the checked copy :func:`to_score_input` makes, so what is sent is
    what was checked; a str or an :class:`ImageDocument` (immutable) comes back as given.
    """
    if isinstance(query, str):
        if not query.strip():
            raise RerankInputError("query is empty")
        _check_text("query", query)
        return query
    if not isinstance(query, ImageDocument | Mapping):
        raise RerankInputError(
            "query must be a str, an ImageDocument or {'content': [parts]}, "
            f"got {type(query).__name__}"
        )
    checked = to_score_input(query, "query")
    assert not isinstance(checked, str)
    parts = checked["content"]
    for position, part in enumerate(parts):
        if part["type"] == "text":  # an image's URL was checked where it was made (_check_url)
            _check_text(f"query part {position}", part["text"])
    if all(part["type"] == "text" and not part["text"].strip() for part in parts):
        raise RerankInputError("query is empty")
    return query if isinstance(query, ImageDocument) else checked


def check_top_n(top_n: object) -> None:
    """``top_n`` is None (all) or a positive count."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise RerankInputError(f"top_n must be None or a positive int, got {top_n!r:.60}")
