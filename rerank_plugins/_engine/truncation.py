"""What text a call sends: the prompt mode applied, documents cut to the model's window.

The budget arithmetic is pure (:func:`window_for`, :func:`document_budget`); only cutting a
document that may overflow asks the server (``/tokenize`` and ``/detokenize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import prompts
from ..errors import RerankInputError, RerankStatusError
from ..multimodal import RerankInputItem, text_of
from ..types import DocumentInput, PreparedCall, ServerInfo
from . import chunks
from .context import CallContext, WarnOnce, gather_or_cancel
from .http import NO_ROUTE, send
from .wire import detokenized, tokens_of

__all__ = [
    "TRUNCATION_MARGIN",
    "UNKNOWN_ADDED_TOKENS",
    "Truncation",
    "Window",
    "document_budget",
    "long_documents",
    "prepare_call",
    "tokens",
    "utf8_len",
    "window_for",
]

# Room for tokens that merge or split differently where the query side meets a document.
TRUNCATION_MARGIN = 4
# What the server adds to a pair when it reported nothing: generous for special tokens.
UNKNOWN_ADDED_TOKENS = 8


def prepare_call(
    mode: str,
    query: RerankInputItem,
    documents: Sequence[DocumentInput],
    instruction: str | None,
    reads_instruction: bool,
) -> PreparedCall:
    """Apply the prompt mode: what text goes on the wire for this query and these documents."""
    if mode == "client":
        texts = [d for d in documents if isinstance(d, str)]
        if len(texts) != len(documents) or not isinstance(query, str):
            raise RerankInputError(
                "a query or documents with images need a server that formats the prompt "
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


# -- the window budget (pure) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """How much of the model's window one pair's query side and document may take."""

    tokens: int  # the window less what the server adds to a pair, less a margin
    added: int  # what the server adds to a pair (measured, or assumed)
    side: str  # the query side and the text around each document, to be tokenized
    byte_bound: int  # a document of no more UTF-8 bytes cannot overflow: sent uncut


def window_for(
    max_model_len: int, added_tokens: int | None, mode: str, query: str, instruction: str | None
) -> Window:
    """The window a call's documents share with its query side.

    ``added_tokens`` is what the probe measured; without it a server that templates is
    assumed to add its template's bytes, any other a few special tokens.
    """
    added = added_tokens
    if added is None:
        added = (
            utf8_len(prompts.format_query("") + prompts.format_document(""))
            if mode == "server"
            else UNKNOWN_ADDED_TOKENS
        )
    side, wrapper = pair_sides(mode, query, instruction)
    tokens = max_model_len - added - TRUNCATION_MARGIN
    return Window(tokens, added, side + wrapper, tokens - utf8_len(side) - utf8_len(wrapper))


def long_documents(docs: Sequence[DocumentInput], byte_bound: int) -> list[int]:
    """Positions of the texts that may overflow (an image's size is the server's to judge)."""
    return [i for i, doc in enumerate(docs) if isinstance(doc, str) and utf8_len(doc) > byte_bound]


def document_budget(window: Window, side_tokens: int, max_model_len: int) -> int:
    """Tokens left for a document once the query side took ``side_tokens``."""
    budget = window.tokens - side_tokens
    if budget <= 0:
        raise RerankInputError(
            f"the query and prompt take {side_tokens + window.added} tokens, leaving no room "
            f"for documents in the model's window of {max_model_len} tokens"
        )
    return budget


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


# -- cutting, with the server's tokenizer --------------------------------------------------


class Truncation:
    """Cuts documents to the window; remembers a server that has no tokenizer route."""

    def __init__(self, warn: WarnOnce) -> None:
        self._warn = warn
        self.can_tokenize = True  # False once the server answered /tokenize with 404/405

    async def prepare(
        self,
        ctx: CallContext,
        query: RerankInputItem,
        docs: list[DocumentInput],
        instruction: str | None,
    ) -> PreparedCall:
        """The query and documents as they go on the wire (mode applied, cut to fit)."""
        info = ctx.info
        assert info is not None
        mode = info.prompt_mode or "raw"
        instruction = instruction or ctx.config.instruction
        if ctx.config.truncate and info.max_model_len and docs:
            docs = await self._fit(ctx, info, mode, query, docs, instruction)
        return prepare_call(mode, query, docs, instruction, info.supports_instruction)

    async def _fit(
        self,
        ctx: CallContext,
        info: ServerInfo,
        mode: str,
        query: RerankInputItem,
        docs: list[DocumentInput],
        instruction: str | None,
    ) -> list[DocumentInput]:
        """Cut documents that would overflow the window, so the prompt's end stays intact."""
        found = await self.window(ctx, info, mode, query, docs, instruction)
        if found is None:
            return docs
        long, budget = found
        model = ctx.model
        fitted = list(docs)
        texts = {i: doc for i in long if isinstance(doc := docs[i], str)}
        limiter = ctx.limiter

        async def cut(i: int) -> None:
            async with limiter:
                fitted[i] = await _cut_to(ctx, model, texts[i], budget)

        await gather_or_cancel([cut(i) for i, text in texts.items() if utf8_len(text) > budget])
        return fitted

    async def window(
        self,
        ctx: CallContext,
        info: ServerInfo,
        mode: str,
        query: RerankInputItem,
        docs: Sequence[DocumentInput],
        instruction: str | None,
    ) -> tuple[list[int], int] | None:
        """The documents that may overflow the window, and a document's budget in tokens.

        Byte lengths bound token counts, so a call whose documents cannot overflow sends no
        tokenizer request at all (None), nor does a server without ``/tokenize``. A query
        with images counts as its text: as for an image document, an image's size is the
        server's to judge (nothing here tokenizes an image).
        """
        assert info.max_model_len is not None
        side = text_of(query)
        window = window_for(info.max_model_len, info.added_tokens, mode, side, instruction)
        long = long_documents(docs, window.byte_bound)
        if not long or not self.can_tokenize:
            return None
        try:
            side_tokens = len(await tokens(ctx, ctx.model, window.side))
        except RerankStatusError as exc:
            if exc.status_code not in NO_ROUTE:
                raise
            self.can_tokenize = False
            self._warn(
                "no-tokenize",
                "rerank_plugins: %s has no /tokenize (%d): documents longer than the model's "
                "window are sent uncut, and the server will reject them",
                ctx.config.base_url,
                exc.status_code,
            )
            return None
        return long, document_budget(window, side_tokens, info.max_model_len)

    async def chunk_plan(
        self,
        ctx: CallContext,
        query: RerankInputItem,
        docs: list[DocumentInput],
        instruction: str | None,
    ) -> chunks.ChunkPlan | None:
        """The documents longer than the window, split into chunks that fit (None: none is)."""
        info = ctx.info
        assert info is not None
        if not info.max_model_len or not docs:
            return None
        mode = info.prompt_mode or "raw"
        instruction = instruction or ctx.config.instruction
        found = await self.window(ctx, info, mode, query, docs, instruction)
        if found is None:
            return None
        long, budget = found
        model = ctx.model
        return await chunks.split(
            docs,
            long,
            budget,
            lambda text: tokens(ctx, model, text),
            lambda ids: detokenize(ctx, model, ids),
            ctx.limiter,
            gather_or_cancel,
        )


async def tokens(ctx: CallContext, model: str, text: str) -> list[int]:
    """The token ids of ``text`` (``/tokenize``, no special tokens)."""
    payload = {"model": model, "prompt": text, "add_special_tokens": False}
    body = await send(ctx, "POST", "/tokenize", payload)
    return tokens_of(ctx.config.base_url + "/tokenize", body)


async def _cut_to(ctx: CallContext, model: str, text: str, budget: int) -> str:
    ids = await tokens(ctx, model, text)
    if len(ids) <= budget:
        return text
    return await detokenize(ctx, model, ids[:budget])


async def detokenize(ctx: CallContext, model: str, ids: list[int]) -> str:
    """The text of token ids (``/detokenize``)."""
    body = await send(ctx, "POST", "/detokenize", {"model": model, "tokens": ids})
    return detokenized(ctx.config.base_url + "/detokenize", body)
