"""Results of the rerank API as small immutable types, independent of any framework."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .multimodal import ImageDocument, RerankInputItem
from .prompts import needs_template

DocumentInput = str | ImageDocument
"""A document as the client takes it: text, or an image with optional text."""

QueryInput = RerankInputItem
"""A query as the client takes it: text, an ImageDocument or ``{"content": [parts]}``."""

__all__ = [
    "Chunk",
    "ChunkedRerankItem",
    "PreparedCall",
    "RerankItem",
    "RerankResult",
    "ScoreResult",
    "ServerInfo",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the server counted for a call (summed over its batches)."""

    prompt_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.total_tokens + other.total_tokens
        )


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A call as the wire sees it (``client.render``): the query and document texts sent.

    A query or document with images is kept as the caller gave it (a ``{"content": [...]}``
    mapping as its checked copy); it goes on the wire as its content parts.
    """

    query: QueryInput
    documents: tuple[DocumentInput, ...]
    instruction: str | None  # sent as the ``instruction`` field (server mode), else None
    mode: str = "raw"  # the prompt mode applied: "server", "client" or "raw"


@dataclass(frozen=True, slots=True)
class Chunk:
    """The part of a long document that gave its score (``long_documents="chunk"``).

    Chunk ``index`` of ``count`` (0 is the document's start), covering tokens ``start`` to
    ``end`` (exclusive) of the document as the server tokenizes it; ``text`` is what was sent:
    those tokens as the server's tokenizer writes them back (lowercase for an uncased model).
    """

    index: int
    count: int
    start: int
    end: int
    text: str


class RerankItem(NamedTuple):
    """One ranked document: its position in the caller's list, its score and its text.

    A named tuple rather than a frozen dataclass: immutable all the same, and five times
    cheaper to build, which matters at a thousand documents a call.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, as a field should
    score: float
    document: DocumentInput

    @property
    def chunk(self) -> Chunk | None:
        """The chunk that gave the score, for a document split by ``long_documents="chunk"``."""
        return None


class ChunkedRerankItem(RerankItem):
    """A :class:`RerankItem` of a document scored by its best chunk, which ``chunk`` names.

    Still a 3-tuple ``(index, score, document)``, so code that unpacks items is unchanged.
    """

    _best: Chunk

    def __new__(  # noqa: D102
        cls, index: int, score: float, document: DocumentInput, chunk: Chunk
    ) -> ChunkedRerankItem:
        item = super().__new__(cls, index, score, document)
        item._best = chunk
        return item

    def __getnewargs__(self) -> tuple[int, float, DocumentInput, Chunk]:
        return (self.index, self.score, self.document, self._best)

    @property
    def chunk(self) -> Chunk:
        """The chunk that gave the score."""
        return self._best

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, chunk={self._best!r})"


@dataclass(frozen=True, slots=True)
class RerankResult:
    """A ranking, best first, cut to ``top_n``; ``usage`` sums every batch of the call."""

    items: tuple[RerankItem, ...]
    model: str
    usage: Usage
    request_id: str

    def __iter__(self) -> Iterator[RerankItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def indices(self) -> list[int]:
        """Original positions of the ranked documents, best first."""
        return [item.index for item in self.items]

    @property
    def scores(self) -> list[float]:
        """Scores of the ranked documents, best first."""
        return [item.score for item in self.items]


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Scores in the caller's document order (vLLM's ``/score``)."""

    scores: tuple[float, ...]
    model: str
    usage: Usage
    request_id: str


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the client learnt about the server once, and what it chose from that.

    ``formats_prompt`` is True when the server applies a prompt template itself, False when
    it scores the text as sent, None when it gave no signal; ``added_tokens`` is what the
    server adds to every pair (template and special tokens), measured by the probe.
    ``prompt_mode`` is the mode the client uses and ``prompt_detection`` says why.
    ``auth_enforced`` is False when the route answered a probe without the API key.
    ``listwise`` True: the model ranks a whole list in one prompt, so a call is one request.
    """

    version: tuple[int, ...] | None
    model: str
    model_root: str | None
    max_model_len: int | None
    formats_prompt: bool | None = None
    added_tokens: int | None = None
    prompt_mode: str | None = None
    prompt_detection: str = "not probed"
    auth_enforced: bool | None = None
    listwise: bool = False

    @property
    def is_qwen3_reranker(self) -> bool:
        """Whether the served model is a Qwen3-Reranker (by its name or its weights' path)."""
        return needs_template(self.model, self.model_root)

    @property
    def supports_instruction(self) -> bool:
        """Whether ``instruction`` is read: vLLM before 0.22 silently ignores it."""
        return self.version is None or self.version >= (0, 22)
