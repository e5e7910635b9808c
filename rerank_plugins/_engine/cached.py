"""The score cache on a call's path: pair keys (pure), guarded get/set, in-flight dedupe.

A cache never fails a call: a lookup or store that fails or outlasts ``cache.timeout`` is
counted, warned about once, and the cache is left alone for :data:`CACHE_PAUSE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence

from ..cache import ScoreCache, connect_cache, pair_key, pair_prefix
from ..config import RerankConfig
from ..multimodal import RerankInputItem, to_score_input
from ..types import DocumentInput, ServerInfo, Usage
from .context import CallContext, WarnOnce
from .routes import Scored

__all__ = ["CACHE_PAUSE_SECONDS", "CacheGuard", "document_identity", "fetch_once", "pair_keys"]

# How long a cache that just failed is left alone before it is tried again.
CACHE_PAUSE_SECONDS = 1.0

# The scores of the given positions.
Fetch = Callable[[list[int]], Awaitable[Scored]]


# -- keys (pure) -------------------------------------------------------------------------------


def pair_keys(
    config: RerankConfig,
    info: ServerInfo,
    query: RerankInputItem,
    instruction: str | None,
    docs: Sequence[DocumentInput],
) -> list[str]:
    """One key per document: everything its score depends on, hashed.

    Keys come from the caller's text, not the text sent: the key covers all a cut depends on
    (the window, what the server adds, mode, instruction, query), so only misses are cut.
    A text query is in the prefix as itself (keys stored before images stay valid); a query
    with images as its content parts in sorted-key JSON, inside a list so that it never equals
    a text query (not even one holding that JSON), nor its caption alone.
    """
    query_key = query if isinstance(query, str) else [document_identity(query)]
    prefix = pair_prefix(
        [
            config.base_url,
            list(info.version or ()),
            info.model,
            info.model_root,
            info.max_model_len,
            info.prompt_mode,
            info.formats_prompt,
            info.added_tokens,
            instruction,
            config.truncate,
            query_key,
        ]
    )
    return [pair_key(prefix, document_identity(doc)) for doc in docs]


def document_identity(document: RerankInputItem) -> str:
    """A document or query as one string (a key): its text, or its content parts as JSON."""
    if isinstance(document, str):
        return document
    return json.dumps(to_score_input(document), sort_keys=True, separators=(",", ":"))


# -- get and set, each bounded by the cache's timeout ----------------------------------------


class CacheGuard:
    """Lookups and stores that never fail a call, and the pause after a failure.

    ``clock`` (seconds, never going back) times the pause; by default the running loop's
    clock. Tests pass their own to step past a pause without sleeping through it.
    """

    def __init__(self, warn: WarnOnce, *, clock: Callable[[], float] | None = None) -> None:
        self._warn = warn
        self._clock = clock
        self._down_until = 0.0  # clock time until which the cache is left alone

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def paused(self) -> bool:
        """Whether the cache failed a moment ago and is left alone for now."""
        return self._now() < self._down_until

    async def get(self, ctx: CallContext, cache: ScoreCache, keys: list[str]) -> list[float | None]:
        """The stored score of each key; None for a miss, or for all when the cache failed."""
        if self.paused():
            return [None] * len(keys)  # failed a moment ago: do not pay its timeout again
        try:
            await connect_cache(cache)  # one-time set-up, bounded by the cache, not by timeout
            async with asyncio.timeout(cache.timeout):
                found = await cache.get_many(keys)
            if len(found) != len(keys):
                raise ValueError(f"{len(found)} values for {len(keys)} keys")
            return [
                s if isinstance(s, int | float) and not isinstance(s, bool) else None for s in found
            ]
        except Exception as exc:  # a cache never fails a call
            self._failed(ctx, "lookup", cache, exc)
            return [None] * len(keys)

    async def set(self, ctx: CallContext, cache: ScoreCache, scores: dict[str, float]) -> None:
        """Store fetched scores; the caller skips this if the cache was paused when it began."""
        try:
            async with asyncio.timeout(cache.timeout):
                await cache.set_many(scores)
        except Exception as exc:  # a cache never fails a call
            self._failed(ctx, "store", cache, exc)

    def _failed(self, ctx: CallContext, what: str, cache: ScoreCache, exc: Exception) -> None:
        ctx.scope.cache_error()
        # Leave a failing cache alone for a second, so that a dead Redis costs one call in a
        # second its timeout rather than every call.
        self._down_until = self._now() + CACHE_PAUSE_SECONDS
        self._warn(
            "cache",
            "rerank_plugins: cache %s failed (%s: %s) on %r; calls go to the server until it "
            "answers again (counted in rerank_cache_errors, warned once)",
            what,
            type(exc).__name__,
            exc,
            cache,
        )


# -- concurrent identical misses: one request ------------------------------------------------


async def fetch_once(ctx: CallContext, keys: list[str], misses: list[int], fetch: Fetch) -> Scored:
    """Scores of the missed pairs through ``fetch``; a pair another call fetches is awaited.

    A pair whose fetching call was cancelled is fetched here after all.
    """
    loop = asyncio.get_running_loop()
    inflight = ctx.pool.inflight
    owned: list[int] = []
    waiting: list[tuple[int, asyncio.Future[float]]] = []
    futures: dict[str, asyncio.Future[float]] = {}
    for i in misses:
        future = inflight.get(keys[i])
        if future is not None:
            waiting.append((i, future))
        else:
            future = loop.create_future()
            future.add_done_callback(_retrieve)
            inflight[keys[i]] = futures[keys[i]] = future
            owned.append(i)
    usage, served = Usage(), ctx.model
    scores: dict[int, float] = {}
    try:
        if owned:
            fetched, usage, served = await fetch(owned)
            for i, score in zip(owned, fetched, strict=True):
                scores[i] = score
                if not futures[keys[i]].done():
                    futures[keys[i]].set_result(score)
    except BaseException as exc:
        for future in futures.values():
            if not future.done():
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
        raise
    finally:
        for key, future in futures.items():
            if inflight.get(key) is future:
                del inflight[key]
    refetch = []
    for i, future in waiting:
        try:
            scores[i] = await asyncio.shield(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not future.cancelled() or (task is not None and task.cancelling()):
                raise
            refetch.append(i)  # the call fetching it was cancelled: fetch it here
    if refetch:
        ctx.on_progress = None  # the first fetch reported this call's progress
        more, more_usage, _ = await fetch_once(ctx, keys, refetch, fetch)
        scores.update(zip(refetch, more, strict=True))
        usage += more_usage
    return Scored([scores[i] for i in misses], usage, served)


def _retrieve(future: asyncio.Future[float]) -> None:
    # Mark a failed shared fetch as seen even when no other call waited for it.
    if not future.cancelled():
        future.exception()
