"""Framework-free logic shared by the LlamaIndex and LangChain adapters.

Policy lives here (what text to send, what to keep, when to fail open, what metadata a
reranked copy carries); the adapters only translate their framework's objects to and from it.
So are the fields both declare: :class:`AdapterMixin` is a pydantic model, as both frameworks'
bases are (this module is imported by the adapter modules only; their extras bring pydantic).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .client import AsyncRerankClient, ClientOptions, RerankClient
from .errors import (
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankResponseError,
    RerankStatusError,
)
from .types import DocumentInput, QueryInput, RerankResult

__all__ = [
    "ADDED_KEYS",
    "FAIL_OPEN_ERRORS",
    "ORIGINAL_INDEX_KEY",
    "RANK_KEY",
    "RELEVANCE_SCORE_KEY",
    "RERANKED_KEY",
    "RETRIEVAL_SCORE_KEY",
    "AdapterMixin",
    "Placement",
    "RerankOptions",
    "arerank",
    "check_ranking",
    "client_option_names",
    "client_setting_names",
    "document_text",
    "fall_back",
    "prepare_fields",
    "rerank",
    "rerank_metadata",
    "select",
    "shown_settings",
]

logger = logging.getLogger("rerank_plugins")

RELEVANCE_SCORE_KEY = "relevance_score"
"""Metadata key of the rerank score on LangChain copies (LlamaIndex uses ``score``)."""
RETRIEVAL_SCORE_KEY = "retrieval_score"
"""Metadata key of the retriever's score on LlamaIndex copies, kept for comparison."""
RANK_KEY = "rerank_rank"
"""Metadata key of the position after reranking: 1 is the best."""
ORIGINAL_INDEX_KEY = "original_index"
"""Metadata key of the position in the list the adapter was given: 0 is the first."""
RERANKED_KEY = "reranked"
"""Metadata key that is False on the copies returned when the adapter failed open."""

# Failures of the service, not of the caller: worth degrading to the retriever's order.
# Input and config errors are bugs the caller must see, so they always raise.
FAIL_OPEN_ERRORS: tuple[type[RerankError], ...] = (
    RerankConnectionError,
    RerankStatusError,
    RerankResponseError,
)


_CONNECTION_SETTINGS = ("base_url", "model", "api_key")
# For these three None means "not given": the client then reads RERANK_* or its defaults.


def client_option_names() -> tuple[str, ...]:
    """Every key of :class:`~rerank_plugins.client.ClientOptions`, in declaration order.

    Read at call time, so an option added to the client is accepted by the adapters as is.
    """
    keys = ClientOptions.__required_keys__ | ClientOptions.__optional_keys__
    ordered = [name for name in ClientOptions.__annotations__ if name in keys]
    return (*ordered, *sorted(keys.difference(ordered)))


def client_setting_names() -> tuple[str, ...]:
    """Every setting an adapter passes to the client it builds: URL, model, key, options."""
    return (*_CONNECTION_SETTINGS, *client_option_names())


def _secret_names(config: object) -> frozenset[str]:
    """Config fields hidden from its repr (the API key, any later secret): never shown."""
    if not dataclasses.is_dataclass(config):
        return frozenset({"api_key"})
    return frozenset({"api_key"} | {f.name for f in dataclasses.fields(config) if not f.repr})


def _unexpected(owner: str, unknown: Sequence[str], known: Iterable[str]) -> TypeError:
    """The TypeError Python raises for unknown keyword arguments, with close matches."""
    known = sorted(set(known))
    hints = []
    for name in unknown:
        match = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r} (did you mean {match[0]!r}?)" if match else repr(name))
    plural = "s" if len(unknown) > 1 else ""
    return TypeError(
        f"{owner}() got {'an ' if not plural else ''}unexpected keyword argument{plural} "
        f"{', '.join(hints)}"
    )


def _same(name: str, given: Any, held: Any) -> bool:
    if name == "base_url" and isinstance(given, str) and isinstance(held, str):
        return given.rstrip("/") == held.rstrip("/")
    return bool(given == held)


def prepare_fields(
    owner: str, field_names: Collection[str], client: object, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """An adapter's keyword arguments checked and turned into its pydantic fields.

    ``kwargs`` may hold the adapter's own fields and every client setting
    (:func:`client_setting_names`); any other name raises ``TypeError`` naming it. With
    ``client`` (an :class:`AsyncRerankClient`) a client setting that differs from the
    client's own raises :class:`RerankConfigError` naming it (None for ``base_url``,
    ``model`` and ``api_key`` counts as not given); without, the settings build the client.
    ``instruction`` is the adapter's field, sent with every call; when ``client`` is given
    it defaults to the client's instruction. The result carries ``client``, ``base_url``
    and ``model``. ``kwargs`` is not changed.
    """
    settings = [name for name in client_setting_names() if name != "instruction"]
    known = {*field_names, *settings, "client"}
    unknown = [name for name in kwargs if name not in known]
    if unknown:
        raise _unexpected(owner, unknown, known)
    fields = {name: value for name, value in kwargs.items() if name not in settings}
    # JSON has no tuples: a setting that is a tuple (a cert pair) comes back from to_json as
    # a list, and the config is immutable, so it never holds a list.
    given: dict[str, Any] = {
        name: tuple(kwargs[name]) if isinstance(kwargs[name], list) else kwargs[name]
        for name in settings
        if name in kwargs
    }
    for name in _CONNECTION_SETTINGS:
        if given.get(name, "") is None:
            del given[name]
    if client is None:
        built = AsyncRerankClient(**given)
    elif isinstance(client, AsyncRerankClient):
        built = client
        conflicts = [
            name
            for name, value in given.items()
            if not _same(name, value, getattr(client.config, name, object()))
        ]
        if conflicts:
            names = ", ".join(repr(name) for name in conflicts)
            raise RerankConfigError(
                f"{owner}() got client= and client setting{'s' * (len(conflicts) > 1)} "
                f"{names} that the client does not have: pass the settings to "
                "AsyncRerankClient(...) or leave out client="
            )
        if fields.get("instruction") is None:
            fields["instruction"] = client.config.instruction
    else:
        hint = (
            ": pass AsyncRerankClient(config=client.config), the adapter makes the sync twin"
            if isinstance(client, RerankClient)
            else ""
        )
        raise TypeError(
            f"{owner}() client must be an AsyncRerankClient, got {type(client).__name__}{hint}"
        )
    fields.update(client=built, base_url=built.config.base_url, model=built.config.model)
    return fields


def _plain(value: object) -> bool:
    """Whether a value survives ``json.dumps`` and comes back equal enough to rebuild with."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, list | tuple) and all(_plain(item) for item in value)


def shown_settings(
    client: AsyncRerankClient | None,
    *,
    plain_only: bool = False,
    include: Any = None,
    exclude: Any = None,
    exclude_none: bool = False,
) -> dict[str, Any]:
    """The client's options as an adapter shows them in repr and serializes them.

    Leaves out ``instruction`` (the adapter's own field), secrets (config fields with
    ``repr=False``, like ``api_key``) and, with ``plain_only``, values that are not plain
    JSON data (an ``ssl.SSLContext``): those must be passed again when rebuilding.
    ``include``/``exclude`` are pydantic's (sets or dicts of names).
    """
    if client is None:
        return {}
    config = client.config
    secret = _secret_names(config)
    shown: dict[str, Any] = {}
    for name in client_option_names():
        if name == "instruction" or name in secret or not hasattr(config, name):
            continue
        if (include is not None and name not in include) or (
            exclude is not None and name in exclude
        ):
            continue
        value = getattr(config, name)
        if (plain_only and not _plain(value)) or (exclude_none and value is None):
            continue
        shown[name] = value
    return shown


@dataclass(frozen=True, slots=True)
class RerankOptions:
    """What an adapter keeps and how it behaves on failure; checked once, at construction."""

    top_n: int | None = None
    score_threshold: float | None = None
    min_keep: int = 1
    instruction: str | None = None
    fail_open: bool = False

    def __post_init__(self) -> None:
        if self.top_n is not None and (isinstance(self.top_n, bool) or self.top_n < 1):
            raise RerankConfigError(f"top_n must be None or >= 1, got {self.top_n!r}")
        if self.min_keep < 0:
            raise RerankConfigError(f"min_keep must be >= 0, got {self.min_keep!r}")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one input lands in the output; ``score`` is None when it was not reranked."""

    index: int
    rank: int
    score: float | None


def document_text(content: str, metadata: Mapping[str, Any], keys: Sequence[str] = ()) -> str:
    """The text sent for a document: chosen metadata as ``key: value`` lines, then content.

    The layout is LlamaIndex's default metadata template, so both frameworks send the same
    text for the same document. Keys missing from ``metadata`` are skipped.
    """
    lines = [f"{key}: {metadata[key]}" for key in keys if key in metadata]
    return "\n".join(lines) + "\n\n" + content if lines else content


def select(result: RerankResult, options: RerankOptions) -> list[Placement]:
    """Cut a ranking to ``top_n``, then to ``score_threshold`` but never below ``min_keep``."""
    items = list(result.items)[: options.top_n]
    if options.score_threshold is not None:
        above = [item for item in items if item.score >= options.score_threshold]
        items = above if len(above) >= options.min_keep else items[: options.min_keep]
    return [Placement(item.index, rank, item.score) for rank, item in enumerate(items, 1)]


def check_ranking(result: RerankResult, count: int, top_n: int | None) -> None:
    """Raise :class:`RerankResponseError` unless ``result`` ranks what was asked.

    That is ``min(top_n, count)`` distinct documents (all ``count`` without ``top_n``), each
    an index into the input: a shorter or odd ranking would silently lose the caller's
    inputs, so it is a failure of the server like any other (raised, or failed open).
    """
    wanted = count if top_n is None else min(top_n, count)
    indices = [item.index for item in result.items]
    if len(set(indices)) != len(indices) or not all(0 <= i < count for i in indices):
        raise RerankResponseError(
            f"the ranking has repeated or out-of-range positions for {count} documents: "
            f"{indices[:20]}"
        )
    if len(indices) < wanted:
        raise RerankResponseError(
            f"the ranking covers {len(indices)} of the {wanted} documents asked for "
            f"({count} sent, top_n={top_n})"
        )


def fall_back(count: int, options: RerankOptions, error: RerankError) -> list[Placement]:
    """Fail open (the first ``top_n`` inputs in their own order) or re-raise ``error``.

    The cut to ``top_n`` stays so a failed rerank cannot overflow the context budget the
    caller planned for; the retriever's order is the best ranking left.
    """
    if not options.fail_open or not isinstance(error, FAIL_OPEN_ERRORS):
        raise error
    kept = count if options.top_n is None else min(options.top_n, count)
    logger.warning(
        "rerank failed, failing open with %d of %d inputs in their original order: %s",
        kept,
        count,
        error,
    )
    return [Placement(index, index + 1, None) for index in range(kept)]


def rerank(
    client: RerankClient, query: QueryInput, texts: Sequence[DocumentInput], options: RerankOptions
) -> list[Placement]:
    """Rerank with the sync client and apply the options; no request for no texts."""
    if not texts:
        return []
    try:
        result = client.rerank(query, texts, top_n=options.top_n, instruction=options.instruction)
        check_ranking(result, len(texts), options.top_n)
    except RerankError as exc:
        return fall_back(len(texts), options, exc)
    return select(result, options)


async def arerank(
    client: AsyncRerankClient,
    query: QueryInput,
    texts: Sequence[DocumentInput],
    options: RerankOptions,
) -> list[Placement]:
    """Rerank with the async client and apply the options; no request for no texts."""
    if not texts:
        return []
    try:
        result = await client.rerank(
            query, texts, top_n=options.top_n, instruction=options.instruction
        )
        check_ranking(result, len(texts), options.top_n)
    except RerankError as exc:
        return fall_back(len(texts), options, exc)
    return select(result, options)


def rerank_metadata(
    metadata: Mapping[str, Any], placement: Placement, **extra: Any
) -> dict[str, Any]:
    """A new metadata dict for a returned copy: the original entries, rank, position, flag.

    ``extra`` entries whose value is None are left out. Values are deep-copied (as LangChain's
    own rerankers do), so changing a nested value of a copy never reaches the caller's input.
    """
    added: dict[str, Any] = {
        RANK_KEY: placement.rank,
        ORIGINAL_INDEX_KEY: placement.index,
        RERANKED_KEY: placement.score is not None,
    }
    added.update((key, value) for key, value in extra.items() if value is not None)
    return {**copy.deepcopy(dict(metadata)), **added}


ADDED_KEYS = (RELEVANCE_SCORE_KEY, RETRIEVAL_SCORE_KEY, RANK_KEY, ORIGINAL_INDEX_KEY, RERANKED_KEY)
"""Every metadata key an adapter may add to a copy."""


Doc = TypeVar("Doc")  # what the framework reranks: a LangChain Document, a LlamaIndex node


class AdapterMixin(BaseModel, Generic[Doc]):
    """What both adapter classes share; mixed in before the framework's pydantic base.

    The fields both declare, construction from a client or its settings (checked by
    :func:`prepare_fields`), the client's settings in ``repr`` and serialized dumps, the
    options of a call, copies with another instruction, and the sync twin made on first use.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = Field(default=None, description="Documents to return; None keeps all.")
    score_threshold: float | None = Field(default=None, description="Drop documents below.")
    min_keep: int = Field(default=1, description="Kept even when fewer pass the threshold.")
    instruction: str | None = Field(default=None, description="Qwen3-Reranker instruction.")
    fail_open: bool = Field(default=False, description="On server failure keep input order.")
    text_fn: Callable[[Doc], str] | None = Field(
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
        """An adapter over a shared client, or over one it builds from the client's settings.

        Pass ``client=`` to share one :class:`~rerank_plugins.AsyncRerankClient` (the sync
        paths use its ``to_sync()`` twin), or its settings: ``base_url``, ``model``,
        ``api_key`` (else the ``RERANK_*`` environment variables) and every key of
        :class:`~rerank_plugins.client.ClientOptions` (``timeout``, ``prompt_mode``,
        ``max_batch_size``, ...). Passing ``client=`` with a setting the client does not have
        raises :class:`~rerank_plugins.RerankConfigError` naming it. Any other unknown
        keyword raises ``TypeError`` naming it (``topn`` -> "did you mean 'top_n'?").
        """
        # The key lives only inside the client, so repr and serialized dumps never show it.
        kwargs.update(base_url=base_url, model=model, api_key=api_key)
        name = type(self).__name__
        super().__init__(**prepare_fields(name, type(self).model_fields, client, kwargs))
        self._options()  # fail at construction on bad settings

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield from super().__repr_args__()
        yield from shown_settings(self.__dict__.get("client")).items()

    def _dump_settings(self, data: dict[str, Any], info: Any) -> dict[str, Any]:
        """``data`` (the fields a serializer dumped) with the client's plain settings added."""
        data.update(
            shown_settings(
                self.__dict__.get("client"),
                plain_only=True,
                include=info.include,
                exclude=info.exclude,
                exclude_none=info.exclude_none,
            )
        )
        return data

    def with_instruction(self, instruction: str | None) -> Self:
        """A copy using another instruction, sharing this one's clients."""
        return self.model_copy(update={"instruction": instruction})

    def _options(self, instruction: str | None = None) -> RerankOptions:
        """The options of one call; ``instruction`` overrides the adapter's own."""
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
