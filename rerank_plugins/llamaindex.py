"""LlamaIndex adapter: ``VLLMRerank``, a node postprocessor over the shared rerank client.

Needs the ``[llamaindex]`` extra. Nodes in and out, LlamaIndex's two event systems
(instrumentation and callbacks) and its serialization are this module's; the policy (text,
cuts, fail-open, metadata) and the fields both adapters declare are :mod:`._adapters`'.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ._extras import extra_imports
from .errors import RerankInputError
from .multimodal import ImageDocument, is_image_url
from .types import DocumentInput, QueryInput

with extra_imports("llama-index-core", "llamaindex"):
    from llama_index.core.bridge.pydantic import (
        Field,
        SerializationInfo,
        SerializerFunctionWrapHandler,
        model_serializer,
    )
    from llama_index.core.callbacks import CBEventType, EventPayload

    # Re-exported from llama-index-instrumentation without __all__ in newer releases.
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined,unused-ignore]
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import (
        BaseNode,
        ImageNode,
        MetadataMode,
        NodeWithScore,
        QueryBundle,
    )

    from . import _adapters  # its AdapterMixin is a pydantic model
    from ._adapters import ADDED_KEYS, RETRIEVAL_SCORE_KEY, Placement

__all__ = ["RETRIEVAL_SCORE_KEY", "VLLMRerank"]

dispatcher = get_dispatcher(__name__)


@dataclass
class _Call:
    """One call as its events see it: the query and texts going in, the nodes coming out."""

    query: QueryInput
    texts: list[DocumentInput]
    output: list[NodeWithScore] = field(default_factory=list)


class VLLMRerank(_adapters.AdapterMixin[BaseNode], BaseNodePostprocessor):
    """Rerank retrieved nodes with a model served by vLLM (e.g. Qwen3-Reranker).

    Returns new ``NodeWithScore`` objects over copies of the nodes: ``score`` is the rerank
    score, metadata gains ``retrieval_score`` (the retriever's score), ``rerank_rank``,
    ``original_index`` and ``reranked``; these keys are hidden from the LLM and embedding
    text. The caller's nodes are never changed, and a ranking that does not cover what was
    asked (fewer results than documents) is a :class:`~rerank_plugins.RerankResponseError`:
    raised, or failed open with ``fail_open=True``; inputs are never silently dropped.

    The client: ``client=`` shares one :class:`~rerank_plugins.AsyncRerankClient`, else the
    adapter builds one from the client's settings (see ``__init__``).

    ``instruction`` is the adapter's: sent with every call, defaulting to the client's own.
    The client's settings show in ``repr`` and are serialized by ``to_dict``/``to_json``, so
    ``VLLMRerank.from_dict(reranker.to_dict())`` builds an equal adapter; the API key never
    shows and is not serialized (pass ``api_key=`` to ``from_dict`` or set
    ``RERANK_API_KEY``), nor are ``text_fn``, ``callback_manager`` and non-JSON settings.
    """

    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata goes into the text sent."
    )

    @model_serializer(mode="wrap")
    def custom_model_dump(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        """Fields, then the client's settings (no key), then ``class_name``."""
        data: dict[str, Any] = super().custom_model_dump(handler, info)
        class_name = data.pop("class_name", None)
        self._dump_settings(data, info)
        if class_name is not None:
            data["class_name"] = class_name
        return data

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialization."""
        return "VLLMRerank"

    def _text(self, node: BaseNode) -> DocumentInput:
        if self.text_fn:
            return self.text_fn(node)
        text = node.get_content(self.metadata_mode)
        if isinstance(node, ImageNode):
            # An ImageNode goes with its image, as vLLM's multimodal rerank request takes it.
            image = ImageDocument.from_fields(
                text or None,
                url=node.image_url,
                base64_data=node.image,
                path=node.image_path,
                mime_type=node.image_mimetype,
            )
            if image is not None:
                return image
        return text

    @contextmanager
    def _traced(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> Iterator[_Call]:
        """Both event systems around one call; balanced whatever happens inside."""
        top_n = self.top_n or len(nodes)
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model or ""
            )
        )
        call = _Call("", [])
        try:
            with self.callback_manager.event(
                CBEventType.RERANKING,
                payload={
                    EventPayload.NODES: nodes,
                    EventPayload.MODEL_NAME: self.model or "",
                    EventPayload.QUERY_STR: query_bundle and query_bundle.query_str,
                    EventPayload.TOP_K: top_n,
                },
            ) as event:
                if query_bundle is None:
                    raise ValueError("VLLMRerank needs a query: pass query_str or query_bundle")
                for position, item in enumerate(nodes):
                    if not isinstance(item, NodeWithScore):
                        raise RerankInputError(
                            f"nodes[{position}] must be a NodeWithScore, got {type(item).__name__}"
                        )
                call = _Call(_query(query_bundle), [self._text(n.node) for n in nodes])
                yield call
                event.on_end(payload={EventPayload.NODES: call.output})
        finally:
            dispatcher.event(ReRankEndEvent(nodes=call.output))

    def _apply(
        self, nodes: list[NodeWithScore], placements: list[Placement]
    ) -> list[NodeWithScore]:
        out = []
        for placement in placements:
            original = nodes[placement.index]
            node = original.node
            metadata = _adapters.rerank_metadata(
                node.metadata, placement, **{RETRIEVAL_SCORE_KEY: original.score}
            )
            # Copies with their own metadata and exclusion lists: the caller's nodes stay as
            # they were, and the added keys do not leak into LLM prompts or embeddings.
            copy = node.model_copy(
                update={
                    "metadata": metadata,
                    "excluded_llm_metadata_keys": _hide(node.excluded_llm_metadata_keys),
                    "excluded_embed_metadata_keys": _hide(node.excluded_embed_metadata_keys),
                }
            )
            score = original.score if placement.score is None else placement.score
            out.append(NodeWithScore(node=copy, score=score))
        return out

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        with self._traced(nodes, query_bundle) as call:
            placements = _adapters.rerank(self._sync(), call.query, call.texts, self._options())
            call.output = self._apply(nodes, placements)
        return call.output

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        with self._traced(nodes, query_bundle) as call:
            placements = await _adapters.arerank(
                self.client, call.query, call.texts, self._options()
            )
            call.output = self._apply(nodes, placements)
        return call.output


def _query(bundle: QueryBundle) -> QueryInput:
    """The query sent: ``query_str``, or with ``image_path`` set that image with it as text.

    ``image_path`` (LlamaIndex's image query, "a path or URL") is sent as a URL when it is one
    the server reads (``http(s)://``, ``data:image/``, ``file://``), else read here as a file.
    """
    source = bundle.image_path
    if not source:
        return bundle.query_str
    text = bundle.query_str or None
    if is_image_url(source):
        return ImageDocument((source,), text)
    return ImageDocument.from_path(source, text)


def _hide(excluded: list[str]) -> list[str]:
    return [*excluded, *(key for key in ADDED_KEYS if key not in excluded)]
