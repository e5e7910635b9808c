"""Score caches: one score per query-document pair, shared by every call and ``top_n``.

Pass one as ``cache=`` to a client or an adapter::

    client = AsyncRerankClient(url, cache=InMemoryCache())            # this process
    client = AsyncRerankClient(url, cache=RedisCache("redis://host"))  # every process

What a key covers: the server (URL, vLLM version, served model and its root, window), how the
prompt is formatted (the detected mode and what the server adds to a pair), the instruction,
truncation, the query, and a hash of the document text actually sent. What is stored: one
score per pair, never a cut ranking, so a cached pair serves any later ``top_n``; no document
text. Only the misses are sent; concurrent identical misses become one request. Errors and
fail-open results are never cached. A cache that fails or is slow never fails a call: the
client logs one warning, counts it, and asks the server (waiting at most ``timeout``).

Listwise models (jina-reranker-v3), whose scores depend on the whole list, must not be used
with a cache: pass none for them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ._extras import import_extra
from ._loop import on_loop_end

__all__ = ["InMemoryCache", "RedisCache", "ScoreCache", "pair_key", "pair_prefix"]

KEY_VERSION = 1


@runtime_checkable
class ScoreCache(Protocol):
    """What a client needs of a cache.

    Both methods run on the event loop that runs the call: the async client's home loop (its
    caller's) or the client's private I/O loop, so one cache may serve several loops.
    """

    timeout: float
    """Seconds a client waits for one lookup or store before going on without the cache.

    A cache may also define ``async def connect()``: one-time set-up (a connection, a lazy
    import) that the client awaits before each timed lookup, outside ``timeout``; it must
    bound itself and return at once after it has succeeded (see :func:`connect_cache`).
    """

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        """The stored score of each key, None for a miss."""
        ...

    async def set_many(self, scores: Mapping[str, float]) -> None:
        """Store scores (with the cache's TTL)."""
        ...


def pair_prefix(parts: Sequence[object]) -> str:
    """The hash of everything a pair's score depends on except the document."""
    blob = json.dumps([KEY_VERSION, *parts], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def pair_key(prefix: str, document_sent: str) -> str:
    """The key of one pair: the prefix and the hash of the document text as sent."""
    digest = hashlib.sha256(document_sent.encode("utf-8")).hexdigest()
    return hashlib.sha256(f"{prefix}:{digest}".encode()).hexdigest()


class InMemoryCache:
    """A least-recently-used cache in this process, bounded in entries and time.

    Safe to share between clients and threads. ``clock`` (seconds, never going back; default
    :func:`time.monotonic`) dates the entries: pass another to control expiry, e.g. in tests.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl: float = 3600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or not ttl > 0:
            raise ValueError("max_entries must be >= 1 and ttl > 0")
        self.max_entries = max_entries
        self.ttl = ttl
        self.timeout = 1.0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryCache(max_entries={self.max_entries}, ttl={self.ttl:g}, size={len(self)})"

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        """The stored score of each key, None for a miss or an expired entry."""
        now = self._clock()
        found: list[float | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or entry[1] <= now:
                    if entry is not None:
                        del self._entries[key]
                    found.append(None)
                else:
                    self._entries.move_to_end(key)
                    found.append(entry[0])
        return found

    async def set_many(self, scores: Mapping[str, float]) -> None:
        """Store scores; the least recently used go beyond ``max_entries``."""
        expires = self._clock() + self.ttl
        with self._lock:
            for key, score in scores.items():
                self._entries[key] = (score, expires)
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


class RedisCache:
    """Scores in Redis (``redis.asyncio``), one keyspace for every process and machine.

    Keys are ``{namespace}:{sha256}``, values the score as text, each with ``ttl`` seconds to
    live. Needs the ``[redis]`` extra.

    Two budgets. ``timeout`` (default 50 ms) bounds one Redis round trip: the MGET of a lookup
    or the pipelined SETs of a store. A down or slow Redis costs a call at most that, then the
    call goes to the server. ``connect_timeout`` (default 1 s) bounds the one-time set-up on
    each event loop, which the client runs before the first timed operation: the connection
    pool, the TCP connect and redis-py's handshake. In a fresh process these cost 30-40 ms on a
    busy 2-core machine (redis-py's first connection alone reads the installed packages'
    metadata for ~14 ms), against well under 1 ms for a loopback round trip: inside the 50 ms
    they made a fresh process's first lookup time out, so it stored nothing.

    Sizing for a Redis further away: ``timeout`` should cover the network round trip plus
    Redis's own time for ``len(documents)`` keys, with room for jitter, e.g. about three times
    the measured p99 of ``redis-cli --latency`` from the client's host (loopback: well under a
    millisecond; same data centre: 1-2 ms; another region: tens of ms, so 0.2-0.3 s).
    ``connect_timeout`` should cover a TCP (and TLS) handshake plus one round trip. It is paid
    again only when set-up failed: a Redis that is down costs a call its ``connect_timeout`` at
    most once a second (refused connections fail at once).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "rerank",
        ttl: int = 86_400,
        timeout: float = 0.05,
        connect_timeout: float = 1.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        import_extra("redis.asyncio", "RedisCache needs redis: pip install 'rerank-plugins[redis]'")
        if ttl < 1 or not timeout > 0 or not connect_timeout > 0:
            raise ValueError("ttl must be >= 1 second, timeout and connect_timeout > 0")
        self._url = url
        self.namespace = namespace
        self.ttl = int(ttl)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._options = dict(client_options or {})
        # A redis.asyncio client belongs to one event loop; calls on home loops and on I/O
        # loops may share this cache, so each loop gets its own connection pool.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        # The URL may carry a password: show only where it points.
        from urllib.parse import urlsplit

        parts = urlsplit(self._url)
        where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
        return f"RedisCache({where!r}, namespace={self.namespace!r}, ttl={self.ttl})"

    async def connect(self) -> None:
        """Set up this loop's connection pool and open its first connection, once per loop.

        Bounded by ``connect_timeout``, not ``timeout``; a no-op once it has succeeded.
        Clients call it before each lookup; calling it yourself is optional.
        """
        pool = await self._pool()
        if pool.connected:
            return
        async with pool.connecting:  # concurrent first calls share one set-up
            if not pool.connected:
                async with asyncio.timeout(self.connect_timeout):
                    await pool.client.ping()
                pool.connected = True

    async def _pool(self) -> _LoopPool:
        import redis.asyncio  # type: ignore[import-not-found,unused-ignore]

        loop = asyncio.get_running_loop()
        pool = self._clients.get(loop)
        if pool is None:
            options = {
                # Each operation is bounded by ``timeout`` (below, and again by the client);
                # the handshake after a connect is bounded by ``connect_timeout``.
                "socket_timeout": None,
                "socket_connect_timeout": self.connect_timeout,
                **self._options,
            }
            client = redis.asyncio.Redis.from_url(self._url, **options)
            # Closed when the loop ends (each asyncio.run), so no connection outlives it.
            guard = on_loop_end(self._close)
            pool = self._clients[loop] = _LoopPool(client, guard)
            await anext(guard)
        return pool

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        """One MGET for all keys; an unreadable value is a miss."""
        async with asyncio.timeout(self.timeout):
            values = await (await self._pool()).client.mget([self._key(k) for k in keys])
        found: list[float | None] = []
        for value in values:
            try:
                found.append(None if value is None else float(value))
            except ValueError:
                found.append(None)  # not ours, or damaged: a miss
        return found

    async def set_many(self, scores: Mapping[str, float]) -> None:
        """One pipelined SET ... EX ttl per score."""
        pipe = (await self._pool()).client.pipeline(transaction=False)
        for key, score in scores.items():
            pipe.set(self._key(key), repr(score), ex=self.ttl)
        async with asyncio.timeout(self.timeout):
            await pipe.execute()

    async def aclose(self) -> None:
        """Close the connection pool of the running loop."""
        pool = self._clients.get(asyncio.get_running_loop())
        if pool is not None:
            await pool.guard.aclose()  # its guard closes the client

    async def _close(self) -> None:
        pool = self._clients.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.client.aclose()


class _LoopPool:
    """One loop's redis client, the guard that closes it, and whether it has connected."""

    def __init__(self, client: Any, guard: AsyncGenerator[None, None]) -> None:
        self.client = client
        self.guard = guard
        self.connected = False
        self.connecting = asyncio.Lock()


async def connect_cache(cache: ScoreCache) -> None:
    """Run a cache's one-time set-up (``connect()``, under its own bound) if it has one.

    A client calls this before each timed lookup, so that ``timeout`` bounds the round trip
    alone. A cache of your own needs no ``connect``.
    """
    connect = getattr(cache, "connect", None)
    if connect is not None:
        await connect()
