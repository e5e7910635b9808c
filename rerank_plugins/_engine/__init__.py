"""The engine room: the one implementation of a call, behind both clients.

``AsyncRerankClient`` and ``RerankClient`` are facades over an :class:`Engine`. The async
client runs a call on its caller's own loop when that loop is the client's home (see
:mod:`.pools`), else on the client's private I/O loop, and awaits it; the sync twin blocks on
the I/O loop from the caller's thread. Each call's state travels as one :class:`CallContext`,
and everything a call does (server reads, the prompt probe, tokenizing, every batch, retries
and their waits) runs inside its one ``asyncio.timeout``, so ``deadline`` is a total limit.

A call: :meth:`Engine.execute` -> learn the server once (:mod:`.discovery`) -> the score cache
(:mod:`.cached`) -> prompt mode and truncation (:mod:`.truncation`) -> batches, each one
exchange (:func:`.http.send`, bodies and readers in :mod:`.wire`) -> one merged result
(:mod:`.routes`). From ``AsyncRerankClient.rerank`` to the bytes on the wire is four files:
``client.py``, this one, ``http.py`` and ``pools.py`` (``Pool.request``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..multimodal import RerankInputItem, for_text_only
from ..telemetry import Instrument, instruments
from ..types import DocumentInput, PreparedCall, ServerInfo, Usage
from . import chunks, discovery
from .cached import CacheGuard, document_identity, fetch_once, pair_keys
from .checks import CheckedCall
from .context import CallContext, ProgressCallback, WarnOnce, gather_or_cancel
from .http import send
from .pools import Pool, Pools, PoolState
from .routes import Endpoint, Scored, plan_batches, routing_key, served_usage
from .truncation import Truncation
from .wire import Batch

__all__ = [
    "CallContext",
    "CheckedCall",
    "DebugView",
    "Engine",
    "PoolState",
    "ProgressCallback",
]


@dataclass(frozen=True)
class DebugView:
    """What a client holds now, for tests and diagnostics: a snapshot that changes nothing."""

    pools: PoolState  # its loops and connection pools
    instruments: tuple[Instrument, ...]  # the metrics and tracing it reports to


class Engine:
    """Config, pools and what was learnt of the server; shared by a client's twins.

    Built over its I/O thread's pool, which holds the config and the caller's own
    ``transport`` or ``http_client``, if any.
    """

    def __init__(self, io_pool: Pool) -> None:
        self.config = config = io_pool.config
        self.info: ServerInfo | None = None
        self.pools = Pools(io_pool)
        self.run = self.pools.run  # what an async caller awaits (no frame of ours on home)
        self.io = self.pools.io  # where the sync twin blocks
        self._warn = WarnOnce()
        self._truncation = Truncation(self._warn)
        self._cache_guard = CacheGuard(self._warn)
        self._instruments = instruments(config.metrics, config.tracing)

    async def aclose(self) -> None:
        """Close every pool (home's here, when this loop is home) and stop the I/O thread."""
        await self.pools.aclose()

    def close(self) -> None:
        """Close every pool and stop the I/O thread; the next call starts them again."""
        self.pools.close()

    def debug_view(self) -> DebugView:
        """A read-only snapshot of loops, pools and instruments (tests and diagnostics)."""
        return DebugView(self.pools.state(), self._instruments.members)

    # -- what the server is, once per engine -------------------------------------------

    async def server_info(self, ctx: CallContext) -> ServerInfo:
        """``/version``, ``/v1/models`` and the prompt probe, once (concurrent first use waits)."""
        if self.info is not None:
            return self.info
        pool = ctx.pool
        pool.http()
        lock = pool.info_lock
        assert lock is not None
        async with lock:
            if self.info is None:
                self.info = await discovery.learn(ctx, self._warn)
        return self.info

    async def learn(self) -> ServerInfo:
        """The server info, under the deadline."""
        async with CallContext(self.config, self.pools.here()) as ctx:
            return await self.server_info(ctx)

    async def render(
        self, query: RerankInputItem, docs: list[DocumentInput], instruction: str | None
    ) -> PreparedCall:
        """The texts a call would send, after detection and truncation."""
        async with CallContext(self.config, self.pools.here()) as ctx:
            ctx.info = await self.server_info(ctx)
            ctx.model = self.config.model or ctx.info.model
            return await self._truncation.prepare(ctx, query, docs, instruction)

    # -- one call ----------------------------------------------------------------------

    async def execute(self, call: CheckedCall, on_progress: ProgressCallback | None) -> Any:
        """Run one checked call under the deadline (the whole call, not one read)."""
        if self.config.model is None and self.info is None and self._instruments.active:
            await self.learn()  # the model's name labels the call's metrics and span
        model = self.config.model or (self.info.model if self.info else "") or "unknown"
        scope = self._instruments.start_call(call.endpoint.path, model, len(call.docs))
        try:
            ctx = CallContext(self.config, self.pools.here(), scope, call.request_id, on_progress)
            async with ctx:
                result = await self._answer(ctx, call)
        except BaseException as exc:
            scope.finish(exc)
            raise
        scope.finish(None)
        return result

    async def _answer(self, ctx: CallContext, call: CheckedCall) -> Any:
        info = ctx.info = self.info or await self.server_info(ctx)
        model = ctx.model = self.config.model or info.model
        endpoint, query, docs, instruction = call.endpoint, call.query, call.docs, call.instruction
        sent: list[DocumentInput] = docs  # what is scored for each of the caller's documents
        if call.images:
            as_text = for_text_only(
                query, docs, model_name=model, model_root=info.model_root, images=self.config.images
            )
            if as_text is not None:
                sent = list(as_text)
                self._warn(
                    "images",
                    "rerank_plugins: %r takes text only: documents with images are ranked by "
                    "their text (or as empty), the images are not seen (images='error' refuses "
                    "them instead; logged once per client)",
                    model,
                )
        if self.config.long_documents == "chunk" and not info.listwise:
            plan = await self._truncation.chunk_plan(ctx, query, sent, instruction)
            if plan is not None:
                # Every chunk's score, through the cache and batches like any documents.
                scored = await self._rank(ctx, endpoint.uncut(), plan.pieces, plan.pieces, call)
                return chunks.finish(endpoint, plan, scored, docs, ctx.request_id)
        return await self._rank(ctx, endpoint, docs, sent, call)

    async def _rank(
        self,
        ctx: CallContext,
        endpoint: Endpoint,
        docs: list[DocumentInput],
        sent: list[DocumentInput],
        call: CheckedCall,
    ) -> Any:
        """Score ``sent`` (what goes for each of ``docs``); the result holds ``docs``."""
        info, model = ctx.info, ctx.model
        assert info is not None
        query, instruction = call.query, call.instruction
        cache = None if info.listwise else self.config.cache
        if cache is None:
            prepared = await self._truncation.prepare(ctx, query, sent, instruction)
            parts = await self._send_batches(ctx, endpoint, prepared, docs)
            return endpoint.result(parts, model, ctx.request_id)
        keys = pair_keys(self.config, info, query, instruction or self.config.instruction, sent)
        # A lookup that fails in this call pauses the cache for later calls, not this store.
        store = not self._cache_guard.paused()
        scores: list[float | None] = await self._cache_guard.get(ctx, cache, keys)
        misses = [i for i, score in enumerate(scores) if score is None]
        ctx.scope.cache(len(keys) - len(misses), len(misses))

        async def fetch(positions: list[int]) -> Scored:
            wanted = [sent[i] for i in positions]
            prepared = await self._truncation.prepare(ctx, query, wanted, instruction)
            uncut = endpoint.uncut()
            parts = await self._send_batches(ctx, uncut, prepared, wanted)
            return Scored(uncut.scores(parts, len(positions)), *served_usage(parts, ctx.model))

        usage, served = Usage(), model
        if misses:
            fetched = await fetch_once(ctx, keys, misses, fetch)
            for i, score in zip(misses, fetched.scores, strict=True):
                scores[i] = score
            usage, served = fetched.usage, fetched.model
            found = {keys[i]: fetched.scores[n] for n, i in enumerate(misses)}
            if store:
                await self._cache_guard.set(ctx, cache, found)
        elif ctx.on_progress is not None:
            ctx.on_progress(1, 1)
        every = Scored([s for s in scores if s is not None], usage, served)
        return endpoint.from_scores(every, docs, ctx.request_id)

    async def _send_batches(
        self,
        ctx: CallContext,
        endpoint: Endpoint,
        prepared: PreparedCall,
        originals: Sequence[DocumentInput],
    ) -> list[Any]:
        """Every batch of ``prepared``, at most ``max_concurrency`` in flight; parsed parts."""
        # A listwise model scores the list as a whole: splitting it would change every score.
        batch_size = (
            None if self.info is not None and self.info.listwise else self.config.max_batch_size
        )
        batches = plan_batches(prepared.documents, batch_size)
        path = endpoint.path
        url = self.config.base_url + path
        scope, model, request_id, on_progress = (
            ctx.scope,
            ctx.model,
            ctx.request_id,
            ctx.on_progress,
        )
        # One query's batches share a key, so a consistent-hash router keeps them on the
        # replica whose prefix cache holds the query.
        key = routing_key(document_identity(prepared.query)) if self.config.routing_header else None

        async def post(number: int, batch: Batch) -> bytes:
            with scope.batch(len(batch.texts)):
                return await send(
                    ctx,
                    "POST",
                    path,
                    endpoint.payload(model, prepared, batch),
                    f"{request_id}-{number}",
                    routing_key=key,
                )

        if len(batches) == 1:  # the common case, without a task or a limiter
            batch = batches[0]
            part = endpoint.parse(url, await post(0, batch), batch, originals)
            if on_progress is not None:
                on_progress(1, 1)
            return [part]
        done = 0
        limiter = ctx.limiter

        async def run(number: int, batch: Batch) -> Any:
            nonlocal done
            async with limiter:
                body = await post(number, batch)
            part = endpoint.parse(url, body, batch, originals)
            done += 1
            if on_progress is not None:
                on_progress(done, len(batches))
            return part

        return await gather_or_cancel([run(n, b) for n, b in enumerate(batches)])
