"""The two clients: ``AsyncRerankClient`` (share one per application) and its sync twin.

Both are facades over one :class:`~rerank_plugins._engine.Engine`; they differ only in how the
caller waits. An async call runs on the caller's own event loop when that loop is the client's
home loop (the first loop to call, until it ends), else on the client's private I/O loop; the
sync twin blocks its caller's thread on that I/O loop. Arguments are checked in the caller's
thread, so input errors raise before anything is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypedDict, TypeVar, Unpack

import httpx

from ._engine import DebugView, Engine, ProgressCallback
from ._engine.checks import CheckedCall, rerank_call, score_call
from ._engine.pools import Pool
from ._engine.routes import ScoreEndpoint
from .config import Cert, ImagePolicy, LongDocuments, PromptMode, RerankConfig, Verify
from .errors import RerankConfigError

if TYPE_CHECKING:
    from .cache import ScoreCache
    from .telemetry import OpenTelemetryTracing, PrometheusMetrics
from .types import DocumentInput, PreparedCall, QueryInput, RerankResult, ScoreResult, ServerInfo

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


class _ClientBase:
    """What both facades share: the engine, settings, repr, pickling."""

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
        if config is not None and (base_url or model or api_key or options):
            raise RerankConfigError("pass either config=... or individual settings, not both")
        config = config or RerankConfig.resolve(base_url, model, api_key, **options)
        self._engine = Engine(Pool(config, transport, http_client))

    @classmethod
    def _over(cls, engine: Engine) -> Self:
        """A client of this kind over an existing engine: the twin of another client."""
        twin = cls.__new__(cls)
        twin._engine = engine
        return twin

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
        self._engine = Engine(Pool(state["config"]))
        self._engine.info = state["info"]  # frozen: safe to share

    def debug_view(self) -> DebugView:
        """A read-only snapshot of the client's loops, pools and instruments.

        For tests and diagnostics: its fields may change between releases.
        """
        return self._engine.debug_view()


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

    def to_sync(self) -> RerankClient:
        """The sync twin: the same settings, transport, TLS, pool and server info."""
        return RerankClient._over(self._engine)

    async def aclose(self) -> None:
        """Close the connection pools and stop the I/O thread (a later call starts them again)."""
        await self._engine.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def server_info(self) -> ServerInfo:
        """What the server is and how it formats prompts; learnt once per client."""
        return await self._engine.run(self._engine.learn())

    async def render(
        self,
        query: QueryInput,
        documents: Sequence[DocumentInput],
        *,
        instruction: str | None = None,
    ) -> PreparedCall:
        """The exact query and document texts this client would send (after truncation)."""
        call = CheckedCall(ScoreEndpoint(), query, documents, instruction, None)
        return await self._engine.run(self._engine.render(call.query, call.docs, call.instruction))

    async def rerank(
        self,
        query: QueryInput,
        documents: Sequence[DocumentInput],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first, cut to ``top_n`` (None: all)."""
        call = rerank_call(self.config, query, documents, top_n, instruction, request_id)
        return await self._run(call, on_progress)  # type: ignore[no-any-return]

    async def score(
        self,
        query: QueryInput,
        documents: Sequence[DocumentInput],
        *,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Score each document against ``query``, in input order (vLLM's ``/score``)."""
        call = score_call(self.config, query, documents, instruction, request_id)
        return await self._run(call, on_progress)  # type: ignore[no-any-return]

    def _run(self, call: CheckedCall, on_progress: ProgressCallback | None) -> Awaitable[Any]:
        # Not a coroutine itself: the caller awaits the engine's coroutine directly.
        if not call.docs:
            return _ready(call.endpoint.empty(self.config.model or "", call.request_id))
        return self._engine.run(self._engine.execute(call, on_progress))


async def _ready(value: R) -> R:
    return value


class RerankClient(_ClientBase):
    """Blocking twin of :class:`AsyncRerankClient`: same settings, same code, same results.

    Each call runs on the client's private I/O loop while the calling thread waits, so it is
    safe inside a running event loop (Jupyter, Gradio) and from many threads at once, with
    one connection pool. ``transport`` and ``http_client`` are the async ``httpx`` kinds.
    """

    def to_async(self) -> AsyncRerankClient:
        """The async twin: the same settings, transport, TLS, pool and server info."""
        return AsyncRerankClient._over(self._engine)

    def close(self) -> None:
        """Close the connection pool and stop the I/O thread (a later call starts them again)."""
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def server_info(self) -> ServerInfo:
        """What the server is and how it formats prompts; learnt once per client."""
        return self._engine.io.block_on(self._engine.learn())

    def render(
        self,
        query: QueryInput,
        documents: Sequence[DocumentInput],
        *,
        instruction: str | None = None,
    ) -> PreparedCall:
        """The exact query and document texts this client would send (after truncation)."""
        call = CheckedCall(ScoreEndpoint(), query, documents, instruction, None)
        return self._engine.io.block_on(
            self._engine.render(call.query, call.docs, call.instruction)
        )

    def rerank(
        self,
        query: QueryInput,
        documents: Sequence[DocumentInput],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first, cut to ``top_n`` (None: all)."""
        call = rerank_call(self.config, query, documents, top_n, instruction, request_id)
        return self._run(call, on_progress)  # type: ignore[no-any-return]

    def score(
        self,
        query: QueryInput,
        documents: Sequence[DocumentInput],
        *,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Score each document against ``query``, in input order (vLLM's ``/score``)."""
        call = score_call(self.config, query, documents, instruction, request_id)
        return self._run(call, on_progress)  # type: ignore[no-any-return]

    def _run(self, call: CheckedCall, on_progress: ProgressCallback | None) -> Any:
        if not call.docs:
            return call.endpoint.empty(self.config.model or "", call.request_id)
        return self._engine.io.block_on(self._engine.execute(call, on_progress))
