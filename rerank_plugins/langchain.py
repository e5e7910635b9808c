"""LangChain adapter: ``VLLMRerank``, a document compressor over the shared rerank client.

Needs the ``[langchain]`` extra. This module maps LangChain's documents and callback events
onto :mod:`._adapters`, which holds the policy (text, cuts, fail-open, metadata) and the
fields both adapters declare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from ._extras import extra_imports
from .errors import RerankInputError
from .multimodal import ImageDocument
from .types import DocumentInput

with extra_imports("langchain-core", "langchain"):
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.runnables.config import (
        RunnableConfig,
        ensure_config,
        get_async_callback_manager_for_config,
        get_callback_manager_for_config,
    )
    from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

    from . import _adapters  # its AdapterMixin is a pydantic model
    from ._adapters import RELEVANCE_SCORE_KEY, Placement

__all__ = ["RELEVANCE_SCORE_KEY", "VLLMRerank"]

START_EVENT = "rerank_start"
"""Name of the custom event sent to callback handlers before a rerank."""
END_EVENT = "rerank_end"
"""Name of the custom event sent after it, also when it failed or failed open."""


class VLLMRerank(_adapters.AdapterMixin[Document], BaseDocumentCompressor):
    """Rerank documents with a model served by vLLM (e.g. Qwen3-Reranker).

    Returns copies (same ``id``, all original metadata) with ``relevance_score``,
    ``rerank_rank``, ``original_index`` and ``reranked`` added to metadata; the input is
    never changed, and a ranking that does not cover what was asked (fewer results than
    documents) is a :class:`~rerank_plugins.RerankResponseError`: raised, or failed open with
    ``fail_open=True``; inputs are never silently dropped. Callback handlers get the custom
    events ``rerank_start`` and ``rerank_end`` once per call.

    The client: ``client=`` shares one :class:`~rerank_plugins.AsyncRerankClient`, else the
    adapter builds one from the client's settings (see ``__init__``).

    ``instruction`` is the adapter's: sent with every call unless the call passes its own,
    defaulting to the client's own. The client's settings show in ``repr`` and
    ``model_dump()``, so ``VLLMRerank(**reranker.model_dump())`` builds an equal adapter; the
    API key never shows and is not dumped, nor are ``text_fn`` and non-JSON settings.
    """

    metadata_keys: tuple[str, ...] = Field(
        default=(), description="Metadata sent before the content as 'key: value' lines."
    )

    @model_serializer(mode="wrap")
    def _dump_with_settings(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        return self._dump_settings(handler(self), info)

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
        with _Run(self, documents, query, callbacks) as run:
            options = self._options(instruction)
            run.done(_adapters.rerank(self._sync(), query, run.texts(), options))
        return run.out

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
        *,
        instruction: str | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`: awaits the shared client, never a thread."""
        async with _Run(self, documents, query, callbacks) as run:
            options = self._options(instruction)
            run.done(await _adapters.arerank(self.client, query, run.texts(), options))
        return run.out


class _Run:
    """One compression as callback handlers see it: ``rerank_start``, then ``rerank_end``.

    The end event is sent whatever happens inside, with the error if one was raised. Entered
    with ``with`` (sync handlers) or ``async with`` (async handlers, awaited), so that both
    compress methods share one body and differ only by the await of the rerank itself.
    """

    def __init__(
        self,
        adapter: VLLMRerank,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None,
    ) -> None:
        self.adapter = adapter
        self.documents = documents
        self.query = query
        self.config = _config(callbacks)
        self.out: list[Document] = []

    def texts(self) -> list[DocumentInput]:
        """What is sent for the documents; checked inside the run, so a bad input ends it."""
        return self.adapter._texts(self.documents)

    def done(self, placements: list[Placement]) -> None:
        """The reranked copies, in ``placements`` order."""
        self.out = self.adapter._apply(self.documents, placements)

    def _start(self) -> dict[str, Any]:
        adapter = self.adapter
        return {
            "query": self.query,
            "documents": len(self.documents),
            "model": adapter.model,
            "top_n": adapter.top_n,
        }

    def _end(self, error: BaseException | None) -> dict[str, Any]:
        return {
            "documents": len(self.out),
            "reranked": all(doc.metadata[_adapters.RERANKED_KEY] for doc in self.out),
            "error": None if error is None else repr(error),
        }

    def __enter__(self) -> Self:
        self.manager = get_callback_manager_for_config(self.config)
        # None outside a run: then there is no one to tell.
        if run_id := self.manager.parent_run_id:
            self.manager.on_custom_event(START_EVENT, self._start(), run_id=run_id)
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        if run_id := self.manager.parent_run_id:
            self.manager.on_custom_event(END_EVENT, self._end(error), run_id=run_id)

    async def __aenter__(self) -> Self:
        self.amanager = get_async_callback_manager_for_config(self.config)
        if run_id := self.amanager.parent_run_id:
            await self.amanager.on_custom_event(START_EVENT, self._start(), run_id=run_id)
        return self

    async def __aexit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        if run_id := self.amanager.parent_run_id:
            await self.amanager.on_custom_event(END_EVENT, self._end(error), run_id=run_id)


def _config(callbacks: Callbacks | None) -> RunnableConfig:
    # ensure_config also picks up the config of an enclosing run when callbacks is None.
    return ensure_config(RunnableConfig(callbacks=callbacks) if callbacks is not None else None)
