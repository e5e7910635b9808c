"""LangChain adapter: ``VLLMRerank``, a document compressor over the shared rerank client.

Needs the ``[langchain]`` extra. Policy (text, cuts, fail-open, metadata) is in ``_adapters``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

from . import _adapters
from ._adapters import RELEVANCE_SCORE_KEY, Placement, RerankOptions
from .client import AsyncRerankClient, RerankClient
from .errors import RerankInputError
from .multimodal import ImageDocument
from .types import DocumentInput

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.runnables.config import (
        RunnableConfig,
        ensure_config,
        get_async_callback_manager_for_config,
        get_callback_manager_for_config,
    )
    from pydantic import (
        ConfigDict,
        Field,
        PrivateAttr,
        SerializationInfo,
        SerializerFunctionWrapHandler,
        model_serializer,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise _adapters.missing_extra("langchain-core", "langchain", exc) from exc

__all__ = ["RELEVANCE_SCORE_KEY", "VLLMRerank"]

START_EVENT = "rerank_start"
"""Name of the custom event sent to callback handlers before a rerank."""
END_EVENT = "rerank_end"
"""Name of the custom event sent after it, also when it failed or failed open."""


class VLLMRerank(BaseDocumentCompressor):
    """Rerank documents with a model served by vLLM (e.g. Qwen3-Reranker).

    Returns copies (same ``id``, all original metadata) with ``relevance_score``,
    ``rerank_rank``, ``original_index`` and ``reranked`` added to metadata; the input is
    never changed, and a ranking that does not cover what was asked (fewer results than
    documents) is a :class:`~rerank_plugins.RerankResponseError`: raised, or failed open with
    ``fail_open=True``; inputs are never silently dropped. Callback handlers get the custom
    events ``rerank_start`` and ``rerank_end`` once per call.

    The client: pass ``client=`` to share one :class:`~rerank_plugins.AsyncRerankClient`
    (the sync paths use its ``to_sync()`` twin), or its settings, from which the adapter
    builds one: ``base_url``, ``model``, ``api_key`` (else the ``RERANK_*`` environment
    variables) and every key of :class:`~rerank_plugins.client.ClientOptions` (``timeout``,
    ``prompt_mode``, ``max_batch_size``, ...). Passing ``client=`` with a setting the client
    does not have raises :class:`~rerank_plugins.RerankConfigError` naming it. Any other
    unknown keyword raises ``TypeError`` naming it (``topn`` -> "did you mean 'top_n'?").

    ``instruction`` is the adapter's: sent with every call unless the call passes its own,
    defaulting to the client's own. The client's settings show in ``repr`` and
    ``model_dump()``, so ``VLLMRerank(**reranker.model_dump())`` builds an equal adapter; the
    API key never shows and is not dumped, nor are ``text_fn`` and non-JSON settings.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = Field(default=None, description="Documents to return; None keeps all.")
    score_threshold: float | None = Field(default=None, description="Drop documents below.")
    min_keep: int = Field(default=1, description="Kept even when fewer pass the threshold.")
    instruction: str | None = Field(default=None, description="Qwen3-Reranker instruction.")
    fail_open: bool = Field(default=False, description="On server failure keep input order.")
    metadata_keys: tuple[str, ...] = Field(
        default=(), description="Metadata sent before the content as 'key: value' lines."
    )
    text_fn: Callable[[Document], str] | None = Field(
        default=None, exclude=True, description="Builds the text sent for a document instead."
    )
    base_url: str = Field(description="Root URL of the vLLM server.")
    model: str | None = Field(default=None, description="Served model name.")
    client: AsyncRerankClient = Field(exclude=True, repr=False, description="Shared client.")
    _sync_client: RerankClient | None = PrivateAttr(default=None)

    def __init__(
        self,
        *,
        client: AsyncRerankClient | None = None,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        # The key lives only inside the client, so repr and model_dump never show it.
        kwargs.update(base_url=base_url, model=model, api_key=api_key)
        name = type(self).__name__
        super().__init__(**_adapters.prepare_fields(name, type(self).model_fields, client, kwargs))
        self._options(None)  # fail at construction on bad settings

    @model_serializer(mode="wrap")
    def _dump_with_settings(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data.update(
            _adapters.shown_settings(
                self.__dict__.get("client"),
                plain_only=True,
                include=info.include,
                exclude=info.exclude,
                exclude_none=info.exclude_none,
            )
        )
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield from super().__repr_args__()
        yield from _adapters.shown_settings(self.__dict__.get("client")).items()

    def with_instruction(self, instruction: str | None) -> Self:
        """A copy using another instruction, sharing this one's clients."""
        return self.model_copy(update={"instruction": instruction})

    def _options(self, instruction: str | None) -> RerankOptions:
        return RerankOptions(
            self.top_n,
            self.score_threshold,
            self.min_keep,
            instruction or self.instruction,
            self.fail_open,
        )

    def _sync(self) -> RerankClient:
        # Made on first sync use: the async path never needs it.
        if self._sync_client is None:
            self._sync_client = self.client.to_sync()
        return self._sync_client

    def _texts(self, docs: Sequence[Document]) -> list[DocumentInput]:
        for position, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise RerankInputError(
                    f"documents[{position}] must be a langchain Document, got {type(doc).__name__}"
                )
        if self.text_fn is not None:
            return [self.text_fn(doc) for doc in docs]
        texts: list[DocumentInput] = []
        for doc in docs:
            text = _adapters.document_text(doc.page_content, doc.metadata, self.metadata_keys)
            # An image in metadata ("image": URL or data URL) goes with the text, as NVIDIA's
            # LangChain reranker sends it.
            image = ImageDocument.from_metadata(text, doc.metadata)
            texts.append(text if image is None else image)
        return texts

    def _start(self, query: str, docs: Sequence[Document]) -> dict[str, Any]:
        return {"query": query, "documents": len(docs), "model": self.model, "top_n": self.top_n}

    @staticmethod
    def _end(out: list[Document], error: BaseException | None) -> dict[str, Any]:
        return {
            "documents": len(out),
            "reranked": all(doc.metadata[_adapters.RERANKED_KEY] for doc in out),
            "error": None if error is None else repr(error),
        }

    @staticmethod
    def _apply(docs: Sequence[Document], placements: list[Placement]) -> list[Document]:
        return [
            docs[p.index].model_copy(
                update={
                    "metadata": _adapters.rerank_metadata(
                        docs[p.index].metadata, p, **{RELEVANCE_SCORE_KEY: p.score}
                    )
                }
            )
            for p in placements
        ]

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
        *,
        instruction: str | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; ``instruction`` overrides the adapter's."""
        manager = get_callback_manager_for_config(_config(callbacks))
        run_id = manager.parent_run_id  # None outside a run: then there is no one to tell
        if run_id:
            manager.on_custom_event(START_EVENT, self._start(query, documents), run_id=run_id)
        out: list[Document] = []
        error: BaseException | None = None
        try:
            texts = self._texts(documents)
            placements = _adapters.rerank(self._sync(), query, texts, self._options(instruction))
            out = self._apply(documents, placements)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if run_id:
                manager.on_custom_event(END_EVENT, self._end(out, error), run_id=run_id)
        return out

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
        *,
        instruction: str | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`: awaits the shared client, never a thread."""
        manager = get_async_callback_manager_for_config(_config(callbacks))
        run_id = manager.parent_run_id
        if run_id:
            await manager.on_custom_event(START_EVENT, self._start(query, documents), run_id=run_id)
        out: list[Document] = []
        error: BaseException | None = None
        try:
            texts = self._texts(documents)
            options = self._options(instruction)
            placements = await _adapters.arerank(self.client, query, texts, options)
            out = self._apply(documents, placements)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if run_id:
                await manager.on_custom_event(END_EVENT, self._end(out, error), run_id=run_id)
        return out


def _config(callbacks: Callbacks | None) -> RunnableConfig:
    # ensure_config also picks up the config of an enclosing run when callbacks is None.
    return ensure_config(RunnableConfig(callbacks=callbacks) if callbacks is not None else None)
