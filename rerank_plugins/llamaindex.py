"""LlamaIndex adapter: ``VLLMRerank``, a node postprocessor over the shared rerank client.

Needs the ``[llamaindex]`` extra. Policy (text, cuts, fail-open, metadata) is in ``_adapters``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

from . import _adapters
from ._adapters import ADDED_KEYS, RETRIEVAL_SCORE_KEY, Placement, RerankOptions
from .client import AsyncRerankClient, RerankClient

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload

    # Re-exported from llama-index-instrumentation without __all__ in newer releases.
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined,unused-ignore]
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise _adapters.missing_extra("llama-index-core", "llamaindex", exc) from exc

__all__ = ["RETRIEVAL_SCORE_KEY", "VLLMRerank"]

dispatcher = get_dispatcher(__name__)


@dataclass
class _Call:
    """One call as its events see it: the query and texts going in, the nodes coming out."""

    query: str
    texts: list[str]
    output: list[NodeWithScore] = field(default_factory=list)


class VLLMRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a model served by vLLM (e.g. Qwen3-Reranker).

    Returns new ``NodeWithScore`` objects over copies of the nodes: ``score`` is the rerank
    score, metadata gains ``retrieval_score`` (the retriever's score), ``rerank_rank``,
    ``original_index`` and ``reranked``; these keys are hidden from the LLM and embedding
    text. The caller's nodes are never changed. Pass ``client=`` to share one
    :class:`~rerank_plugins.AsyncRerankClient`; else one is built from ``base_url``, ``model``,
    ``api_key`` or the ``RERANK_*`` environment variables.
    """

    top_n: int | None = Field(default=None, description="Nodes to return; None keeps all.")
    score_threshold: float | None = Field(default=None, description="Drop nodes scoring below.")
    min_keep: int = Field(default=1, description="Kept even when fewer pass the threshold.")
    instruction: str | None = Field(default=None, description="Qwen3-Reranker instruction.")
    fail_open: bool = Field(default=False, description="On server failure keep input order.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata goes into the text sent."
    )
    text_fn: Callable[[BaseNode], str] | None = Field(
        default=None, exclude=True, description="Builds the text sent for a node instead."
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
        **fields: Any,
    ) -> None:
        # The key lives only inside the client, so repr, to_dict and to_json never show it.
        client = client or AsyncRerankClient(base_url, model, api_key)
        fields.update(client=client, base_url=client.config.base_url, model=client.config.model)
        super().__init__(**fields)
        self._options()  # fail at construction on bad settings

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialization."""
        return "VLLMRerank"

    def with_instruction(self, instruction: str | None) -> Self:
        """A copy using another instruction, sharing this one's clients."""
        return self.model_copy(update={"instruction": instruction})

    def _options(self) -> RerankOptions:
        return RerankOptions(
            self.top_n, self.score_threshold, self.min_keep, self.instruction, self.fail_open
        )

    def _sync(self) -> RerankClient:
        # Made on first sync use: the async path never needs it.
        if self._sync_client is None:
            self._sync_client = self.client.to_sync()
        return self._sync_client

    def _text(self, node: BaseNode) -> str:
        return self.text_fn(node) if self.text_fn else node.get_content(self.metadata_mode)

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
                call = _Call(query_bundle.query_str, [self._text(n.node) for n in nodes])
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


def _hide(excluded: list[str]) -> list[str]:
    return [*excluded, *(key for key in ADDED_KEYS if key not in excluded)]
