"""The score cache against real servers: all-MiniLM-L6-v2 on vLLM and a real redis-server.

Cached answers equal uncached ones; only misses are sent; two fresh processes share one Redis
(the second sends no scoring request: counted by a loopback proxy); a
Redis killed mid-run costs each call at most the cache timeout and one warning, and the cache
works again after a restart; keys follow everything a score depends on; Redis holds only
scores with a TTL; identical concurrent misses become one request; errors and fail-open
results are never stored. Requests are counted by a transport that sees what the client
sends (the batch requests carry an ``X-Request-Id``; the one-off prompt probe does not).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from support.fault_proxy import RERANK_PATHS, SCORE_PATHS, FaultProxy, wait_until
from support.redis_server import RedisServer, free_port, session_redis
from support.servers import REPO_ROOT
from support.texts import SKILLET_DOCS as DOCS
from support.texts import SKILLET_QUERY as QUERY

from rerank_plugins import AsyncRerankClient, RerankClient, RerankConfig, RerankError
from rerank_plugins._engine.cached import CACHE_PAUSE_SECONDS, CacheGuard, pair_keys
from rerank_plugins._engine.context import CallContext, WarnOnce
from rerank_plugins.cache import InMemoryCache, RedisCache, pair_key, pair_prefix
from rerank_plugins.telemetry import PrometheusMetrics
from rerank_plugins.types import ServerInfo

NEW_DOCS = [
    "Store cast iron in a dry cupboard with a paper towel inside to soak up moisture.",
    "Tomato sauce simmered for hours can strip a young seasoning layer.",
    "The Great Wall of China is visible from many places along its length.",
]
RERANK = "/v2/rerank"
SCORE = "/score"


class CountingTransport(httpx.AsyncHTTPTransport):
    """Records the JSON body of each batch POST (those with an X-Request-Id) by path."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and "x-request-id" in request.headers:
            with self._lock:
                self.sent.append((request.url.path, json.loads(request.content)))
        return await super().handle_async_request(request)

    def posts(self, path: str = RERANK) -> list[dict[str, Any]]:
        with self._lock:
            return [body for p, body in self.sent if p == path]

    def documents(self, path: str = RERANK) -> list[str]:
        return [doc for body in self.posts(path) for doc in body["documents"]]

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> RedisServer:
    return session_redis(pytestconfig)


@pytest.fixture
def namespace() -> str:
    """A fresh Redis namespace per test: tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    db = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield db
    db.close()


@pytest.fixture(scope="module")
def plain(minilm_server: Any) -> Iterator[RerankClient]:
    """An uncached client: the reference every cached answer must equal."""
    with RerankClient(minilm_server.base_url) as client:
        yield client


def make_cache(kind: str, redis_server: RedisServer | None, namespace: str, **kw: Any) -> Any:
    if kind == "memory":
        return InMemoryCache(**kw)
    assert redis_server is not None
    return RedisCache(redis_server.url, namespace=namespace, **kw)


def fresh_cache(kind: str, request: pytest.FixtureRequest, namespace: str | None = None) -> Any:
    """A ``kind`` cache ("memory", or "redis" on the session's redis-server), own namespace."""
    server = request.getfixturevalue("redis_server") if kind == "redis" else None
    return make_cache(kind, server, namespace or f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["memory", "redis"])
def any_cache(request: pytest.FixtureRequest) -> Any:
    """Each cache kind, fresh: an InMemoryCache, a RedisCache on the session's redis-server."""
    return fresh_cache(request.param, request)


def ranking(result: Any) -> list[tuple[int, float]]:
    return [(item.index, item.score) for item in result]


def keys_in(db: redis.Redis, namespace: str) -> list[str]:
    return sorted(db.scan_iter(match=f"{namespace}:*", count=1000))


# --- equal answers, fewer requests -------------------------------------------------------------


def test_cached_rerank_equals_uncached_for_every_top_n(
    any_cache: Any, minilm_server: Any, plain: RerankClient
) -> None:
    transport = CountingTransport()
    with RerankClient(minilm_server.base_url, cache=any_cache, transport=transport) as client:
        first = client.rerank(QUERY, DOCS, top_n=2)
        assert len(transport.posts()) == 1
        # The miss request asks for every score (top_n 0), so any later top_n is a hit.
        assert transport.posts()[0]["top_n"] == 0
        assert transport.documents() == DOCS
        assert ranking(first) == ranking(plain.rerank(QUERY, DOCS, top_n=2))
        for top_n in (1, 3, 5, None):
            cached = client.rerank(QUERY, DOCS, top_n=top_n)
            assert ranking(cached) == ranking(plain.rerank(QUERY, DOCS, top_n=top_n)), top_n
            assert [item.document for item in cached] == [DOCS[i] for i in cached.indices]
        assert len(transport.posts()) == 1, "a larger top_n was sent to the server"


def test_cached_score_equals_uncached(
    any_cache: Any, minilm_server: Any, plain: RerankClient
) -> None:
    transport = CountingTransport()
    expected = plain.score(QUERY, DOCS).scores
    with RerankClient(minilm_server.base_url, cache=any_cache, transport=transport) as client:
        assert client.score(QUERY, DOCS).scores == expected
        assert client.score(QUERY, DOCS).scores == expected
        assert len(transport.posts(SCORE)) == 1
        assert transport.documents(SCORE) == DOCS


async def test_only_misses_are_sent(
    any_cache: Any, minilm_server: Any, plain: RerankClient
) -> None:
    transport = CountingTransport()
    async with AsyncRerankClient(minilm_server.base_url, cache=any_cache, transport=transport) as c:
        await c.rerank(QUERY, DOCS[:5])
        assert transport.documents() == DOCS[:5]
        transport.clear()
        mixed = [NEW_DOCS[0], *DOCS[:5], NEW_DOCS[1]]
        result = await c.rerank(QUERY, mixed, top_n=4)
        assert transport.documents() == [NEW_DOCS[0], NEW_DOCS[1]]
        assert len(transport.posts()) == 1
    # One ranking over hits and fresh scores, as an uncached call ranks them (scores of the
    # fresh pairs come from a smaller batch: equal to float precision).
    expected = plain.rerank(QUERY, mixed, top_n=4)
    assert result.indices == expected.indices
    assert result.scores == pytest.approx(expected.scores, abs=1e-5)
    assert result.scores == sorted(result.scores, reverse=True)


# One fresh process: the default 50 ms budget, its logging on stderr, this tree's package.
FRESH_PROCESS = """\
import json, logging, sys
from rerank_plugins import RerankClient
from rerank_plugins.cache import RedisCache
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
url, redis_url, ns, query, docs = sys.argv[1:5] + [json.loads(sys.argv[5])]
with RerankClient(url, cache=RedisCache(redis_url, namespace=ns)) as client:
    result = client.rerank(query, docs)
print(json.dumps([[item.index, item.score] for item in result]))
"""


def test_two_fresh_processes_share_one_redis(
    minilm_server: Any,
    plain: RerankClient,
    redis_server: RedisServer,
    namespace: str,
    tmp_path: Any,
) -> None:
    """The second of two fresh processes sends no scoring request: the first one's lookup
    fits its 50 ms budget (set-up is bounded apart), and its scores are stored."""
    docs = [f"{doc} (note {n})" for n in range(5) for doc in DOCS]  # 40 documents
    proxy = FaultProxy(minilm_server.base_url).start()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # this tree's package
    argv = [proxy.url, redis_server.url, namespace, QUERY, json.dumps(docs)]
    scoring_requests, rankings = [], []
    try:
        for _ in range(2):
            proxy.reset_stats()
            done = subprocess.run(
                [sys.executable, "-c", FRESH_PROCESS, *argv],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
                env=env,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            assert "rerank_plugins: cache" not in done.stderr, done.stderr[-3000:]  # none failed
            scoring_requests.append(proxy.stats.hits(RERANK_PATHS + SCORE_PATHS))
            rankings.append([tuple(pair) for pair in json.loads(done.stdout)])
    finally:
        proxy.stop()
    # Each process posts the one-pair capability probe once; only the first scores the 40.
    first, second = scoring_requests
    assert second == 1, f"the second process sent {second - 1} scoring request(s)"
    assert first > second
    assert rankings[0] == rankings[1]
    expected = plain.rerank(QUERY, docs)
    assert [index for index, _ in rankings[1]] == expected.indices
    assert [score for _, score in rankings[1]] == pytest.approx(expected.scores, abs=1e-5)


# --- a Redis that dies -------------------------------------------------------------------------


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "rerank_plugins" and r.levelno >= logging.WARNING and "cache" in r.message
    ]


def time_cache_operations(cache: RedisCache) -> list[tuple[str, float, str]]:
    """Time every later operation of ``cache``: one (name, seconds, outcome) entry each, the
    outcome being "ok" or the name of what it raised (a cancellation included)."""
    spent: list[tuple[str, float, str]] = []

    def timed(name: str, operation: Any) -> Any:
        async def run(*args: Any) -> Any:
            start = time.perf_counter()
            outcome = "ok"
            try:
                return await operation(*args)
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                spent.append((name, time.perf_counter() - start, outcome))

        return run

    for name in ("connect", "get_many", "set_many"):
        setattr(cache, name, timed(name, getattr(cache, name)))
    return spent


def test_redis_killed_mid_run(
    minilm_server: Any,
    plain: RerankClient,
    redis_server: RedisServer,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rerank_plugins")
    queries = [f"{QUERY} (variant {n})" for n in range(6)]
    expected = {q: plain.rerank(q, DOCS) for q in queries}
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    cache = RedisCache(redis_server.url, namespace=namespace)
    transport = CountingTransport()
    client = RerankClient(minilm_server.base_url, cache=cache, metrics=metrics, transport=transport)
    try:
        for q in queries[:3]:
            client.rerank(q, DOCS)  # stored while Redis is up
        assert not cache_warnings(caplog)

        # A loop of calls; Redis is SIGKILLed (by its PID) while it runs.
        results: list[tuple[str, Any]] = []
        errors: list[BaseException] = []
        started = threading.Event()

        def loop() -> None:
            try:
                for n in range(30):
                    q = queries[n % len(queries)]
                    results.append((q, client.rerank(q, DOCS)))
                    if n == 4:
                        started.set()
            except BaseException as exc:
                errors.append(exc)
                started.set()

        worker = threading.Thread(target=loop)
        worker.start()
        assert started.wait(120)
        redis_server.kill()
        worker.join(300)
        assert not worker.is_alive()
        assert not errors, errors
        assert len(results) == 30
        for q, result in results:
            assert result.indices == expected[q].indices
            assert result.scores == pytest.approx(expected[q].scores, abs=1e-5)
        assert len(cache_warnings(caplog)) == 1, [r.message for r in caplog.records]
        errors_counted = registry.get_sample_value(
            "rerank_cache_errors_total", {"model": "all-MiniLM-L6-v2", "route": RERANK}
        )
        assert errors_counted is not None and errors_counted >= 1

        # What a dead Redis costs each call: the time the client spends in the cache, timed
        # around each cache operation (not around the call, so the server's own jitter on a
        # loaded machine is no part of it). A refused connection fails in milliseconds and
        # the engine bounds each operation by the cache's timeout (50 ms), so a lookup and
        # its store cost well under a second even on a loaded 2-core machine; a cache that
        # waited on a dead Redis (its 1 s connect_timeout, or connect retries) would not.
        # Calls go on until the cache has been asked, and failed, after two of its pauses:
        # a bound checked only on calls that skipped the cache would prove nothing.
        spent = time_cache_operations(cache)
        failed_operations = 0
        give_up = time.monotonic() + 4 * CACHE_PAUSE_SECONDS + 30
        n = 0
        while failed_operations < 2 and time.monotonic() < give_up:
            spent.clear()
            result = client.rerank(f"{QUERY} (dead redis {n})", DOCS)
            n += 1
            assert sorted(result.indices) == list(range(len(DOCS)))
            assert sum(seconds for _, seconds, _ in spent) < 2 * cache.timeout + 1.0, spent
            round_trips = [outcome for name, _, outcome in spent if name != "connect"]
            assert "ok" not in round_trips, f"a dead Redis answered: {spent}"
            failed_operations += len(round_trips)
        assert failed_operations >= 2, f"{n} calls never asked the dead Redis"
        assert len(cache_warnings(caplog)) == 1, "warned more than once"

        # Redis is back (empty): stores and hits resume. The first call may still meet a
        # stale connection, and the cache is then left alone for CACHE_PAUSE_SECONDS: try
        # for a few pauses' time.
        redis_server.restart()
        q = f"{QUERY} (after restart)"
        give_up = time.monotonic() + 4 * CACHE_PAUSE_SECONDS + 5
        while time.monotonic() < give_up:
            client.rerank(q, DOCS)
            transport.clear()
            client.rerank(q, DOCS)
            if not transport.posts():
                break
        assert transport.posts() == [], "no cache hits after Redis came back"
        hits = registry.get_sample_value(
            "rerank_cache_hits_total", {"model": "all-MiniLM-L6-v2", "route": RERANK}
        )
        assert hits is not None and hits >= len(DOCS)
    finally:
        client.close()
        if not redis_server.running:
            redis_server.restart()


class FlakyCache:
    """A score cache that fails while ``down``; counts the lookups and stores it was asked."""

    timeout = 1.0

    def __init__(self) -> None:
        self.down = True
        self.lookups = self.stores = 0
        self.scores: dict[str, float] = {}

    async def get_many(self, keys: list[str]) -> list[float | None]:
        self.lookups += 1
        if self.down:
            raise ConnectionError("cache down")
        return [self.scores.get(k) for k in keys]

    async def set_many(self, scores: dict[str, float]) -> None:
        self.stores += 1
        if self.down:
            raise ConnectionError("cache down")
        self.scores.update(scores)


async def test_a_failed_cache_is_left_alone_for_its_pause(caplog: pytest.LogCaptureFixture) -> None:
    """After a failure the cache is not asked for CACHE_PAUSE_SECONDS, then asked again."""
    now = [50.0]
    guard = CacheGuard(WarnOnce(), clock=lambda: now[0])
    ctx = CallContext(RerankConfig(base_url="http://127.0.0.1:8000"), pool=None)  # no pool used
    cache = FlakyCache()
    keys = ["k1", "k2"]

    assert await guard.get(ctx, cache, keys) == [None, None]  # failed: both go to the server
    assert cache.lookups == 1 and guard.paused()
    now[0] += CACHE_PAUSE_SECONDS - 0.01
    assert await guard.get(ctx, cache, keys) == [None, None]
    assert cache.lookups == 1, "asked again during its pause"
    now[0] += 0.01
    assert not guard.paused()
    assert await guard.get(ctx, cache, keys) == [None, None]
    assert cache.lookups == 2, "not asked again after its pause"
    assert guard.paused(), "a second failure starts a new pause"

    cache.down = False
    now[0] += CACHE_PAUSE_SECONDS
    await guard.set(ctx, cache, {"k1": 0.5})
    assert await guard.get(ctx, cache, keys) == [0.5, None]
    assert not guard.paused()
    warnings = [r for r in caplog.records if "cache lookup failed" in r.getMessage()]
    assert len(warnings) == 1, "warned more than once"


# --- keys and what Redis holds -----------------------------------------------------------------


def engine_keys(base_url: str = "http://127.0.0.1:8000", **changes: Any) -> list[str]:
    """The engine's keys for one call, with parts of the server or the call changed."""
    info = ServerInfo(
        version=(0, 32, 0),
        model=changes.pop("model", "all-MiniLM-L6-v2"),
        model_root="/models/minilm",
        max_model_len=256,
        formats_prompt=False,
        added_tokens=3,
        prompt_mode=changes.pop("mode", "raw"),
    )
    query = changes.pop("query", QUERY)
    documents = list(changes.pop("documents", DOCS[:3]))
    instruction = changes.pop("instruction", None)
    assert not changes
    client = RerankClient(base_url, cache=InMemoryCache())
    try:
        keys: list[str] = pair_keys(client.config, info, query, instruction, documents)
    finally:
        client.close()
    return keys


def test_keys_follow_everything_a_score_depends_on() -> None:
    base = engine_keys()
    assert len(set(base)) == 3
    assert engine_keys() == base  # stable
    variants = {
        "server": engine_keys("http://127.0.0.1:8001"),
        "model": engine_keys(model="other-model"),
        "prompt mode": engine_keys(mode="server"),
        "instruction": engine_keys(instruction="Judge relevance"),
        "query": engine_keys(query=QUERY + "?"),
    }
    for what, keys in variants.items():
        assert not set(keys) & set(base), f"keys did not change with the {what}"
    changed_doc = engine_keys(documents=[DOCS[0] + " ", DOCS[1], DOCS[2]])
    assert changed_doc[0] != base[0]
    assert changed_doc[1:] == base[1:]  # one document's text changes only its key

    # The public helpers: a prefix per setting, a key per document.
    parts: list[object] = ["http://a", [0, 32], "m", None, 256, "raw", False, 3, None, True, "q"]
    prefix = pair_prefix(parts)
    assert pair_prefix(list(parts)) == prefix
    for i, value in enumerate(["http://b", [0, 33], "n", "/r", 512, "server", True, 4, "i"]):
        changed = list(parts)
        changed[i] = value
        assert pair_prefix(changed) != prefix, i
    assert pair_key(prefix, "doc") == pair_key(prefix, "doc")
    assert pair_key(prefix, "doc") != pair_key(prefix, "doc ")
    assert pair_key(prefix, "doc") != pair_key(pair_prefix([*parts[:-1], "q2"]), "doc")


def test_keys_differ_between_server_urls(minilm_server: Any) -> None:
    """The same pairs through another URL of the server are other keys: a shared cache keys
    scores by the server a client was given, and never serves one server's pairs to another."""
    cache = InMemoryCache()
    with RerankClient(minilm_server.base_url, cache=cache) as a:
        a.rerank(QUERY, DOCS[:3])
    assert len(cache) == 3
    other_url = minilm_server.base_url.replace("127.0.0.1", "localhost")
    assert other_url != minilm_server.base_url
    transport = CountingTransport()
    with RerankClient(other_url, cache=cache, transport=transport) as b:
        b.rerank(QUERY, DOCS[:3])
    assert transport.documents() == DOCS[:3], "the pairs were served under another server's keys"
    assert len(cache) == 6


def test_redis_holds_only_scores_with_ttl(
    minilm_server: Any, redis_server: RedisServer, redis_db: redis.Redis, namespace: str
) -> None:
    ttl = 600
    cache = RedisCache(redis_server.url, namespace=namespace, ttl=ttl)
    with RerankClient(minilm_server.base_url, cache=cache) as client:
        client.rerank(QUERY, DOCS)
        client.score("a different query about skillets", DOCS[:4])
    keys = keys_in(redis_db, namespace)
    assert len(keys) == len(DOCS) + 4
    texts = [QUERY, "skillets", *DOCS]
    for key in keys:
        value = redis_db.get(key)
        assert value is not None
        float(value)  # a score, nothing else
        assert len(value) < 40
        for text in texts:
            assert text not in key and text not in value
        assert key.split(":", 1)[1].isalnum()
        remaining = redis_db.ttl(key)
        assert 0 < remaining <= ttl


# --- coalescing --------------------------------------------------------------------------------


async def test_concurrent_identical_misses_are_sent_once(
    minilm_server: Any, plain: RerankClient
) -> None:
    transport = CountingTransport()
    async with AsyncRerankClient(
        minilm_server.base_url, cache=InMemoryCache(), transport=transport
    ) as client:
        results = await asyncio.gather(*(client.rerank(QUERY, DOCS, top_n=3) for _ in range(32)))
    assert sorted(transport.documents()) == sorted(DOCS), "the server saw some pairs twice"
    expected = plain.rerank(QUERY, DOCS, top_n=3)
    for result in results:
        assert result.indices == expected.indices
        assert result.scores == pytest.approx(expected.scores, abs=1e-5)


def test_redis_cache_closes_its_connections_when_each_loop_ends(
    minilm_server: Any, redis_server: RedisServer, namespace: str, redis_db: redis.Redis
) -> None:
    """An async client runs on each asyncio.run's loop: the cache's pool of that loop too."""
    cache = RedisCache(redis_server.url, namespace=namespace)
    client = AsyncRerankClient(minilm_server.base_url, cache=cache)
    gc.collect()  # what earlier tests left behind is not this test's

    def connected_clients() -> int:
        return int(redis_db.info("clients")["connected_clients"])

    before = connected_clients()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(12):
            result = asyncio.run(client.rerank(QUERY, DOCS, top_n=3))
            assert len(result) == 3
            # Closed as each loop ended: Redis (which notes a hang-up a moment later) counts
            # no connection left over from it.
            assert wait_until(lambda: connected_clients() <= before), "a loop's pool outlived it"
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    assert connected_clients() <= before
    assert len(keys_in(redis_db, namespace)) == len(DOCS)


# --- InMemoryCache -----------------------------------------------------------------------------


def test_in_memory_cache_is_lru_bounded() -> None:
    cache = InMemoryCache(max_entries=3)

    async def run() -> None:
        await cache.set_many({"a": 1.0, "b": 2.0, "c": 3.0})
        assert await cache.get_many(["a"]) == [1.0]  # a is now the most recently used
        await cache.set_many({"d": 4.0})
        assert len(cache) == 3
        assert await cache.get_many(["a", "b", "c", "d"]) == [1.0, None, 3.0, 4.0]
        await cache.set_many({"e": 5.0, "f": 6.0})
        assert await cache.get_many(["a", "c", "d", "e", "f"]) == [None, None, 4.0, 5.0, 6.0]

    asyncio.run(run())
    with pytest.raises(ValueError):
        InMemoryCache(max_entries=0)
    with pytest.raises(ValueError):
        InMemoryCache(ttl=0)


def test_in_memory_cache_entries_expire() -> None:
    now = [100.0]
    cache = InMemoryCache(ttl=60, clock=lambda: now[0])

    async def run() -> None:
        await cache.set_many({"a": 0.5})
        now[0] += 59.9
        assert await cache.get_many(["a", "b"]) == [0.5, None]  # a read does not renew it
        await cache.set_many({"b": 0.75})
        now[0] += 0.1  # a's 60 s are up; b has 59.9 left
        assert await cache.get_many(["a", "b"]) == [None, 0.75]
        assert len(cache) == 1  # the expired entry is gone, not just hidden
        await cache.set_many({"a": 0.25})  # stored again: a fresh TTL
        now[0] += 59.9
        assert await cache.get_many(["a", "b"]) == [0.25, None]

    asyncio.run(run())


# --- never cached: errors and fail-open results ------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_failed_call_stores_nothing(
    kind: str, minilm_server: Any, request: pytest.FixtureRequest, namespace: str
) -> None:
    cache = fresh_cache(kind, request, namespace)
    with (
        RerankClient(minilm_server.base_url, model="no-such-model", cache=cache) as client,
        pytest.raises(RerankError) as caught,
    ):
        client.rerank(QUERY, DOCS)
    assert getattr(caught.value, "status_code", None) == 404
    if kind == "memory":
        assert len(cache) == 0
    else:
        db = request.getfixturevalue("redis_db")
        assert keys_in(db, namespace) == []


def test_fail_open_results_are_not_cached(redis_server: RedisServer, namespace: str) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.langchain import VLLMRerank as LangChainRerank
    from rerank_plugins.llamaindex import VLLMRerank as LlamaIndexRerank

    dead = f"http://127.0.0.1:{free_port()}"
    memory = InMemoryCache()
    shared = RedisCache(redis_server.url, namespace=namespace)
    settings: dict[str, Any] = {"model": "m", "fail_open": True, "max_retries": 0}
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in DOCS[:3]]
    for cache in (memory, shared):
        out = LlamaIndexRerank(base_url=dead, cache=cache, **settings).postprocess_nodes(
            nodes, query_str=QUERY
        )
        assert [n.node.get_content() for n in out] == DOCS[:3]  # input order: failed open
        docs = [Document(page_content=t) for t in DOCS[:3]]
        kept = LangChainRerank(base_url=dead, cache=cache, **settings).compress_documents(
            docs, QUERY
        )
        assert [d.page_content for d in kept] == DOCS[:3]
    assert len(memory) == 0
    db = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert keys_in(db, namespace) == []
    finally:
        db.close()
