"""The two clients: ``AsyncRerankClient`` (share one per application) and its sync twin.

Both are facades over one :class:`~rerank_plugins._engine.Engine`, which runs every request on
the client's private I/O loop: they differ only in how the caller waits (``await`` or block).
Arguments are checked in the caller's thread, so input errors raise before anything is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict, TypeVar, Unpack

import httpx

from . import _core
from ._engine import Engine, ProgressCallback
from .config import Cert, ImagePolicy, LongDocuments, PromptMode, RerankConfig, Verify
from .errors import RerankConfigError, RerankInputError
from .multimodal import check_images_allowed, has_images

if TYPE_CHECKING:
    from .cache import ScoreCache
    from .telemetry import OpenTelemetryTracing, PrometheusMetrics
from .types import DocumentInput, PreparedCall, RerankResult, ScoreResult, ServerInfo

__all__ = ["AsyncRerankClient", "ClientOptions", "ProgressCallback", "RerankClient"]

R = TypeVar("R")


class ClientOptions(TypedDict, total=False):
    """Settings beyond URL, model and key; see :class:`RerankConfig` for each."""

    route: str
    score_route: str | None
    prompt_mode: PromptMode
    instruction: str | None
    max_batch_size: int | None
    max_concurrency: int
    max_connections: int
    timeout: float
    deadline: float | None
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    truncate: bool
    long_documents: LongDocuments
    images: ImagePolicy
    verify: Verify
    cert: Cert | None
    proxy: str | None
    trust_env: bool
    routing_header: str | None
    listwise: bool | None
    cache: ScoreCache | None
    metrics: bool | PrometheusMetrics
    tracing: bool | OpenTelemetryTracing


class _Call:
    """One call's checked arguments: what the engine needs, built in the caller's thread."""

    def __init__(
        self,
        endpoint: _core.Endpoint[Any],
        query: object,
        documents: object,
        instruction: object,
        request_id: object,
    ) -> None:
        self.endpoint = endpoint
        self.docs = _core.check_input(query, documents, instruction)
        self.images = has_images(self.docs)
        self.query: str = query  # type: ignore[assignment]  # checked just above
        self.instruction: str | None = instruction  # type: ignore[assignment]
        if request_id is not None and (
            not isinstance(request_id, str) or not request_id.isascii() or not request_id
        ):
            raise RerankInputError(f"request_id must be a non-empty ASCII str, got {request_id!r}")
        self.request_id = request_id or _core.new_request_id()


def _checked(config: RerankConfig, call: _Call) -> _Call:
    """With ``images="error"``, images for a text-only family fail here, before any request."""
    if config.model and call.images and config.images == "error":
        check_images_allowed(call.query, call.docs, model_name=config.model, unknown_ok=False)
    return call


class _ClientBase:
    """What both facades share: the engine, settings, repr, pickling."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key: str | None,
        config: RerankConfig | None,
        transport: httpx.AsyncBaseTransport | None,
        http_client: httpx.AsyncClient | None,
        options: ClientOptions,
        engine: Engine | None = None,
    ) -> None:
        if engine is not None:
            self._engine = engine
            return
        if config is not None and (base_url or model or api_key or options):
            raise RerankConfigError("pass either config=... or individual settings, not both")
        config = config or RerankConfig.resolve(base_url, model, api_key, **options)
        self._engine = Engine(config, transport, http_client)

    @property
    def config(self) -> RerankConfig:
        """The settings of this client (shared with its twin)."""
        return self._engine.config

    @property
    def info(self) -> ServerInfo | None:
        """What was learnt of the server so far (None before the first call)."""
        return self._engine.info

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.config.base_url!r}, model={self.config.model!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Loops, pools and locks do not pickle; they are made again on first use.
        return {"config": self.config, "info": self._engine.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._engine = Engine(state["config"])
        self._engine.info = state["info"]  # frozen: safe to share

    def _call(self, call: _Call, on_progress: ProgressCallback | None) -> Coroutine[Any, Any, Any]:
        """The engine's coroutine for one checked call (run by either facade)."""
        return self._engine.call(
            call.endpoint,
            call.query,
            call.docs,
            call.images,
            call.instruction,
            on_progress,
            call.request_id,
        )

    @staticmethod
    def _rerank_call(
        config: RerankConfig,
        query: object,
        documents: object,
        top_n: object,
        instruction: object,
        request_id: object,
    ) -> _Call:
        _core.check_top_n(top_n)
        endpoint = _core.RerankEndpoint(config.route, top_n)  # type: ignore[arg-type]
        return _checked(config, _Call(endpoint, query, documents, instruction, request_id))

    @staticmethod
    def _score_call(
        config: RerankConfig, query: object, documents: object, instruction: object, rid: object
    ) -> _Call:
        call = _Call(_core.ScoreEndpoint(config.score_path), query, documents, instruction, rid)
        return _checked(config, call)


class AsyncRerankClient(_ClientBase):
    """Async client for vLLM's rerank API; one per application, safe across event loops.

    Args:
        base_url: Server root, e.g. ``http://127.0.0.1:8000``; else ``RERANK_BASE_URL``.
        model: Served model name; else ``RERANK_MODEL``; else the server's first model.
        api_key: Bearer token; else ``RERANK_API_KEY``. Never logged or shown in reprs.
        config: A ready :class:`RerankConfig` instead of the settings above.
        transport: An ``httpx.AsyncBaseTransport`` for the client's HTTP client (tests,
            custom networking); ``httpx.MockTransport`` works.
        http_client: An ``httpx.AsyncClient`` to use as is; the caller closes it. It is used
            on this client's own I/O loop only.
        **options: Further settings, see :class:`RerankConfig`.

    A call runs on the caller's event loop when that loop is the client's home: the first loop
    to call, until it ends (``asyncio.run`` returns) or :meth:`aclose`. Calls from any other
    loop run on a private event loop in a daemon thread, as do the sync twin's. Each of those
    two holds one connection pool of at most ``max_connections``; nothing leaks when a
    caller's loop ends. ``on_progress`` is called on the loop that runs the call.

    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        config: RerankConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, model, api_key, config, transport, http_client, options)

    def to_sync(self) -> RerankClient:
        """The sync twin: the same settings, transport, TLS, pool and server info."""
        return RerankClient._over(self._engine)

    @classmethod
    def _over(cls, engine: Engine) -> AsyncRerankClient:
        twin = cls.__new__(cls)
        _ClientBase.__init__(twin, None, None, None, None, None, None, {}, engine)
        return twin

    async def aclose(self) -> None:
        """Close the connection pools and stop the I/O thread (a later call starts them again)."""
        await self._engine.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def server_info(self) -> ServerInfo:
        """What the server is and how it formats prompts; learnt once per client."""
        return await self._engine.run(self._engine.learn())

    async def render(
        self, query: str, documents: Sequence[DocumentInput], *, instruction: str | None = None
    ) -> PreparedCall:
        """The exact query and document texts this client would send (after truncation)."""
        call = _Call(_core.ScoreEndpoint(), query, documents, instruction, None)
        return await self._engine.run(self._engine.render(call.query, call.docs, call.instruction))

    async def rerank(
        self,
        query: str,
        documents: Sequence[DocumentInput],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first, cut to ``top_n`` (None: all)."""
        call = self._rerank_call(self.config, query, documents, top_n, instruction, request_id)
        return await self._run(call, on_progress)  # type: ignore[no-any-return]

    async def score(
        self,
        query: str,
        documents: Sequence[DocumentInput],
        *,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Score each document against ``query``, in input order (vLLM's ``/score``)."""
        call = self._score_call(self.config, query, documents, instruction, request_id)
        return await self._run(call, on_progress)  # type: ignore[no-any-return]

    def _run(self, call: _Call, on_progress: ProgressCallback | None) -> Awaitable[Any]:
        # Not a coroutine itself: the caller awaits the engine's call directly.
        if not call.docs:
            return _ready(call.endpoint.empty(self.config.model or "", call.request_id))
        return self._engine.run(self._call(call, on_progress))


async def _ready(value: R) -> R:
    return value


class RerankClient(_ClientBase):
    """Blocking twin of :class:`AsyncRerankClient`: same settings, same code, same results.

    Each call runs on the client's private I/O loop while the calling thread waits, so it is
    safe inside a running event loop (Jupyter, Gradio) and from many threads at once, with
    one connection pool. ``transport`` and ``http_client`` are the async ``httpx`` kinds.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        config: RerankConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, model, api_key, config, transport, http_client, options)

    @classmethod
    def _over(cls, engine: Engine) -> RerankClient:
        twin = cls.__new__(cls)
        _ClientBase.__init__(twin, None, None, None, None, None, None, {}, engine)
        return twin

    def to_async(self) -> AsyncRerankClient:
        """The async twin: the same settings, transport, TLS, pool and server info."""
        return AsyncRerankClient._over(self._engine)

    def close(self) -> None:
        """Close the connection pool and stop the I/O thread (a later call starts them again)."""
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def server_info(self) -> ServerInfo:
        """What the server is and how it formats prompts; learnt once per client."""
        return self._engine.io.call(self._engine.learn())

    def render(
        self, query: str, documents: Sequence[DocumentInput], *, instruction: str | None = None
    ) -> PreparedCall:
        """The exact query and document texts this client would send (after truncation)."""
        call = _Call(_core.ScoreEndpoint(), query, documents, instruction, None)
        return self._engine.io.call(self._engine.render(call.query, call.docs, call.instruction))

    def rerank(
        self,
        query: str,
        documents: Sequence[DocumentInput],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first, cut to ``top_n`` (None: all)."""
        call = self._rerank_call(self.config, query, documents, top_n, instruction, request_id)
        return self._run(call, on_progress)  # type: ignore[no-any-return]

    def score(
        self,
        query: str,
        documents: Sequence[DocumentInput],
        *,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Score each document against ``query``, in input order (vLLM's ``/score``)."""
        call = self._score_call(self.config, query, documents, instruction, request_id)
        return self._run(call, on_progress)  # type: ignore[no-any-return]

    def _run(self, call: _Call, on_progress: ProgressCallback | None) -> Any:
        if not call.docs:
            return call.endpoint.empty(self.config.model or "", call.request_id)
        return self._engine.io.call(self._call(call, on_progress))
