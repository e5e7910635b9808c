"""The one implementation of a call, run on an event loop that holds a connection pool.

``AsyncRerankClient`` and ``RerankClient`` are facades over an :class:`Engine`. The async
client runs a call on its caller's own loop when that loop is the client's home (see
:mod:`._connections`), else on the client's private I/O loop, and awaits it; the sync twin
blocks on the I/O loop from the caller's thread.
Everything a call does (server reads, the prompt probe, tokenizing, every batch, retries and
their waits) runs inside one ``asyncio.timeout``, so ``deadline`` is a total time limit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _chunks, _core, _detect, families, prompts
from ._connections import Home, Pool
from ._loop import IOLoop
from ._parse import json_object, usage_tokens
from .cache import ScoreCache, pair_key, pair_prefix
from .config import RerankConfig
from .errors import (
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankInputError,
    RerankStatusError,
    RerankTimeoutError,
)
from .multimodal import for_text_only
from .telemetry import SILENT, CallScope, instruments
from .types import DocumentInput, PreparedCall, ServerInfo, Usage

__all__ = ["Engine", "ProgressCallback"]

logger = logging.getLogger("rerank_plugins")

R = TypeVar("R")
T = TypeVar("T")

ProgressCallback = Callable[[int, int], None]

# How long a cache that just failed is left alone before it is tried again.
CACHE_PAUSE_SECONDS = 1.0
# Statuses that mean "this server has no such route": an optional feature is then unknown.
_NO_ROUTE = frozenset({404, 405})


@dataclass
class _Activity:
    """What a call is doing now (for a deadline error's message) and who watches it."""

    pool: Pool
    now: str = "starting"
    scope: CallScope = SILENT


_ACTIVITY: contextvars.ContextVar[_Activity] = contextvars.ContextVar("rerank_activity")


class _Bounds:
    """``async with _Bounds(engine) as deadline_at``: one call's deadline and activity.

    A class rather than an ``async def`` wrapper: it adds no frame that every resumption of
    the call's innermost await would pass through.
    """

    def __init__(self, engine: Engine, scope: CallScope = SILENT) -> None:
        self._engine = engine
        self._activity = _Activity(engine._pool_here(), scope=scope)
        self._timer: asyncio.Timeout | None = None

    async def __aenter__(self) -> float | None:
        self._token = _ACTIVITY.set(self._activity)
        deadline = self._engine.config.deadline
        if deadline is None:
            return None
        self._timer = asyncio.timeout(deadline)
        await self._timer.__aenter__()
        return asyncio.get_running_loop().time() + deadline

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._timer is not None:
                # On expiry it turns the call's cancellation into TimeoutError.
                await self._timer.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if self._timer is None or not self._timer.expired():
                raise
            raise RerankTimeoutError(
                f"deadline of {self._engine.config.deadline:g}s passed during {self._activity.now}",
                url=self._engine.base_url,
            ) from None
        finally:
            _ACTIVITY.reset(self._token)


class Engine:
    """Config, the I/O loop and what was learnt of the server; shared by a client's twins."""

    def __init__(
        self,
        config: RerankConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                "transport must be an httpx.AsyncBaseTransport (e.g. httpx.MockTransport or "
                f"httpx.AsyncHTTPTransport), got {type(transport).__name__}; both clients run "
                "their requests on an async I/O loop"
            )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(f"http_client must be an httpx.AsyncClient, got {type(http_client)}")
        self.config = config
        self.info: ServerInfo | None = None
        self.io = IOLoop("rerank-plugins-io")
        self._pool = Pool(config, transport, http_client)
        # A caller's own transport or HTTP client keeps its state on one loop: the I/O loop.
        self._may_adopt = transport is None and http_client is None
        self._home: Home | None = None
        self._home_lock = threading.Lock()
        self._warned: set[str] = set()
        self._can_tokenize = True  # False once the server answered /tokenize with 404/405
        self._instruments = instruments(config.metrics, config.tracing)
        self._cache_down_until = 0.0
        # Closes the I/O pool and stops the thread once no facade holds the engine (or at
        # exit). A home pool is closed by its guard, which the loop finishes on collection.
        weakref.finalize(self, self.io.stop, self._pool.aclose)

    @property
    def base_url(self) -> str:
        return self.config.base_url

    # -- where a call runs ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """What an async caller awaits to run ``coro``.

        On the home loop that is ``coro`` itself, so no frame sits between caller and call;
        else a coroutine that adopts this loop as home or hops to the I/O loop.
        """
        loop = asyncio.get_running_loop()
        home = self._home
        if home is not None and home.watching and home.usable_from(loop):
            return coro
        return self._run_elsewhere(coro, loop)

    async def _run_elsewhere(
        self, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop
    ) -> T:
        home = self._home
        if home is None or not home.usable_from(loop):
            home = self._adopt(loop)
        if home is None:
            if self.io.owns(loop):
                return await coro  # already on the I/O loop (a call from an on_progress)
            return await self.io.run(coro)
        await home.watch()
        return await coro

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> Home | None:
        """Make ``loop`` home unless another live loop is; None: use the I/O loop."""
        if not self._may_adopt or self.io.owns(loop):
            return None
        with self._home_lock:
            home = self._home
            if home is not None and home.usable_from(loop):
                return home
            if home is not None and home.alive():
                return None  # another loop is home: this one uses the I/O loop
            self._home = Home(loop, self.config)
            return self._home

    def _pool_here(self) -> Pool:
        """The pool of the running loop: home's, or the I/O loop's."""
        home = self._home
        if home is not None and home.usable_from(asyncio.get_running_loop()):
            return home.pool
        return self._pool

    async def aclose(self) -> None:
        """Close every pool (home's here, when this loop is home) and stop the I/O thread."""
        home = self._home
        if home is not None and home.usable_from(asyncio.get_running_loop()):
            with self._home_lock:
                if self._home is home:
                    self._home = None
            await home.aclose()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close every pool and stop the I/O thread; the next call starts them again."""
        with self._home_lock:
            home, self._home = self._home, None
        if home is not None and home.alive():
            _close_home(home)
        self.io.stop(self._pool.aclose)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    # -- one HTTP exchange, with retries ------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        request_id: str | None,
        deadline_at: float | None,
        *,
        auth: bool = True,
        routing_key: str | None = None,
    ) -> bytes:
        """A 2xx answer's body as received; retries 429/502-504 and transport errors in limits."""
        url = self.base_url + path
        content = None if payload is None else _core.encode_json(payload)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        if request_id:
            headers["X-Request-Id"] = request_id
        if routing_key is not None and self.config.routing_header:
            headers[self.config.routing_header] = routing_key
        activity = _ACTIVITY.get(None)
        pool = activity.pool if activity is not None else self._pool_here()
        scope = activity.scope if activity is not None else SILENT
        pool.http()
        slots = pool.slots
        assert slots is not None
        timeout = self.config.timeout
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            if activity is not None:
                activity.now = f"{method} {url}"
            retry_after = None
            error: RerankError
            reason = "timeout"
            timer: asyncio.Timeout | None = None
            try:
                # Waiting for a free connection is not part of a request's own timeout; the
                # call's deadline bounds it.
                async with slots:
                    timer = asyncio.timeout(timeout)
                    async with timer:
                        response = await pool.request(method, url, content, headers, auth)
            except TimeoutError:
                if timer is None or not timer.expired():
                    raise  # the call's deadline, not this request's timeout
                scope.request("timeout")
                error = RerankTimeoutError(
                    f"{method} {url} got no complete answer within timeout={timeout:g}s",
                    url=url,
                )
            except httpx.InvalidURL as exc:
                raise RerankConfigError(f"base_url is not a usable URL: {exc}") from None
            except httpx.TransportError as exc:
                scope.request("transport_error")
                reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
                error = _transport_error(method, url, exc)
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise error from exc  # another try cannot fix a certificate
                error.__cause__ = exc
            else:
                scope.request(f"{response.status_code // 100}xx")
                if response.is_success:
                    return response.content  # the JSON reader decodes UTF-8 itself
                error = _core.status_error(method, url, response.status_code, response.text)
                if response.status_code not in _core.RETRY_STATUSES:
                    raise error
                retry_after = response.headers.get("retry-after")
                reason = str(response.status_code)
            attempt += 1
            delay = _core.next_retry_delay(
                self.config, attempt, retry_after, deadline_at, loop.time()
            )
            if delay is None:
                raise error
            scope.retry(reason)
            logger.debug("retry %d of %s %s in %.2fs: %s", attempt, method, url, delay, error)
            await asyncio.sleep(delay)

    # -- what the server is, once per engine -------------------------------------------

    async def server_info(self, deadline_at: float | None) -> ServerInfo:
        """``/version``, ``/v1/models`` and the prompt probe, once (concurrent first use waits)."""
        if self.info is not None:
            return self.info
        pool = _ACTIVITY.get().pool
        pool.http()
        lock = pool.info_lock
        assert lock is not None
        async with lock:
            if self.info is None:
                self.info = await self._learn(deadline_at)
        return self.info

    async def _optional(self, path: str, deadline_at: float | None) -> bytes | None:
        try:
            return await self.send("GET", path, None, None, deadline_at)
        except RerankStatusError as exc:
            if exc.status_code in _NO_ROUTE:
                return None  # a gateway or an old server without it: the feature is unknown
            raise

    async def _learn(self, deadline_at: float | None) -> ServerInfo:
        config = self.config
        version_text = await self._optional("/version", deadline_at)
        version = (
            _core.parse_version(self.base_url + "/version", version_text) if version_text else None
        )
        models_text = await self._optional("/v1/models", deadline_at)
        entry = (
            _core.parse_models(self.base_url + "/v1/models", models_text, config.model)
            if models_text
            else None
        )
        model = config.model or (entry.id if entry else None)
        if not model:
            raise RerankConfigError(
                "no model: pass model=... or set RERANK_MODEL (the server listed none)"
            )
        root = entry.root if entry else None
        detection, auth_enforced = await self._probe(model, deadline_at)
        mode, why = _detect.resolve_mode(
            config.prompt_mode,
            detection,
            _detect.needs_template(model, root),
            self.base_url,
        )
        if mode == "client":
            await self._check_chat_tokens(model, deadline_at)
        if config.truncate and (entry is None or entry.max_model_len is None):
            self._warn_once(
                "no-window",
                "rerank_plugins: %s/v1/models gives no max_model_len: documents longer than "
                "the model's window are sent uncut (a gateway without /v1/models?)",
                self.base_url,
            )
        if detection.formats_prompt is None:
            self._warn_once("detect", "rerank_plugins: %s", why)
        else:
            logger.info("rerank_plugins: prompt mode %r: %s", mode, why)
        listwise = families.is_listwise(model, root) if config.listwise is None else config.listwise
        if listwise and config.cache is not None:
            self._warn_once(
                "listwise-cache",
                "rerank_plugins: %s is listwise (its scores depend on the whole list): the "
                "cache is not used for it",
                model,
            )
        return ServerInfo(
            listwise=listwise,
            version=version,
            model=model,
            model_root=root,
            max_model_len=entry.max_model_len if entry else None,
            formats_prompt=detection.formats_prompt,
            added_tokens=detection.added_tokens,
            prompt_mode=mode,
            prompt_detection=why,
            auth_enforced=auth_enforced,
        )

    async def _check_chat_tokens(self, model: str, deadline_at: float | None) -> None:
        """Refuse client-side formatting for a model whose tokenizer lacks Qwen's chat tokens.

        Such a model was not trained on the prompt: MiniLM wrapped in it scores nonsense.
        """
        marker = "<|im_start|>"
        try:
            tokens = await self._tokens(model, marker, deadline_at)
        except RerankStatusError as exc:
            if exc.status_code in _NO_ROUTE:
                return  # no tokenizer to ask: trust the setting
            raise
        if len(tokens) != 1:
            raise RerankConfigError(
                f"prompt_mode='client' formats Qwen3-Reranker's prompt, but the tokenizer of "
                f"{model!r} at {self.base_url} splits {marker!r} into {len(tokens)} tokens: "
                "it is not a Qwen3-Reranker. Set prompt_mode='auto'."
            )

    async def _probe(
        self, model: str, deadline_at: float | None
    ) -> tuple[_detect.Detection, bool | None]:
        """Post the probe pair; with an API key, first without it to see the route is guarded."""
        route = self.config.route
        url = self.base_url + route
        payload = {
            "model": model,
            "query": _detect.PROBE_QUERY,
            "documents": [_detect.PROBE_DOCUMENT],
            "top_n": 0,
        }
        auth_enforced: bool | None = None
        body: bytes | None = None
        for with_key in [False, True] if self.config.api_key else [True]:
            try:
                body = await self.send("POST", route, payload, None, deadline_at, auth=with_key)
            except RerankStatusError as exc:
                if not with_key:
                    # Refused without the key: guarded. Any other failure (a gateway answering
                    # 500 to a keyless request) says nothing; the keyed probe decides.
                    auth_enforced = True if exc.status_code in (401, 403) else None
                    continue
                if exc.status_code in _NO_ROUTE:
                    return _detect.read_probe(None, f"{route} (answered {exc.status_code})"), None
                raise
            if not with_key:
                auth_enforced = False
                self._warn_once(
                    "auth",
                    "rerank_plugins: %s answered without the API key: the key guards nothing "
                    "on this route. Serve with `rerank-serve` (its key guards every route) or "
                    "put an authenticating gateway in front.",
                    url,
                )
            break
        assert body is not None
        tokens = usage_tokens(url, json_object(url, body))
        return _detect.read_probe(tokens[0] if tokens and tokens[0] else None, route), auth_enforced

    # -- one call -----------------------------------------------------------------------

    async def call(
        self,
        endpoint: _core.Endpoint[R],
        query: str,
        docs: list[DocumentInput],
        images: bool,
        instruction: str | None,
        on_progress: ProgressCallback | None,
        request_id: str,
    ) -> R:
        """Run one call under the deadline (the whole call, not one read)."""
        if self.config.model is None and self.info is None and self._instruments.active:
            await self.learn()  # the model's name labels the call's metrics and span
        model = self.config.model or (self.info.model if self.info else "") or "unknown"
        scope = self._instruments.start_call(endpoint.path, model, len(docs))
        try:
            async with _Bounds(self, scope) as deadline_at:
                result = await self._call(
                    endpoint, query, docs, images, instruction, on_progress, request_id, deadline_at
                )
        except BaseException as exc:
            scope.finish(exc)
            raise
        scope.finish(None)
        return result

    async def render(
        self, query: str, docs: list[DocumentInput], instruction: str | None
    ) -> PreparedCall:
        """The texts a call would send, after detection and truncation."""
        async with _Bounds(self) as deadline_at:
            info = await self.server_info(deadline_at)
            limiter = asyncio.Semaphore(self.config.max_concurrency)
            return await self._prepare(info, query, docs, instruction, limiter, deadline_at)

    async def learn(self) -> ServerInfo:
        """The server info, under the deadline."""
        async with _Bounds(self) as deadline_at:
            return await self.server_info(deadline_at)

    async def _call(
        self,
        endpoint: _core.Endpoint[R],
        query: str,
        docs: list[DocumentInput],
        images: bool,
        instruction: str | None,
        on_progress: ProgressCallback | None,
        request_id: str,
        deadline_at: float | None,
    ) -> R:
        info = self.info or await self.server_info(deadline_at)
        model = self.config.model or info.model
        sent: list[DocumentInput] = docs  # what is scored for the caller's documents
        if images:
            text_only = for_text_only(
                query, docs, model_name=model, model_root=info.model_root, images=self.config.images
            )
            if text_only is not None:
                sent = list(text_only)
                self._warn_once(
                    "images",
                    "rerank_plugins: %r takes text only: documents with images are ranked by "
                    "their text (or as empty), the images are not seen (images='error' refuses "
                    "them instead; logged once per client)",
                    model,
                )
        limiter = asyncio.Semaphore(self.config.max_concurrency)
        if self.config.long_documents == "chunk" and not info.listwise:
            plan = await self._chunk_plan(info, query, sent, instruction, limiter, deadline_at)
            if plan is not None:
                # Every piece's score, through the cache and batches like any documents.
                scored = await self._rank(
                    endpoint.every(),
                    model,
                    info,
                    query,
                    plan.pieces,
                    plan.pieces,
                    instruction,
                    limiter,
                    request_id,
                    on_progress,
                    deadline_at,
                )
                return _chunks.finish(endpoint, plan, scored, docs, request_id)
        return await self._rank(
            endpoint,
            model,
            info,
            query,
            docs,
            sent,
            instruction,
            limiter,
            request_id,
            on_progress,
            deadline_at,
        )

    async def _rank(
        self,
        endpoint: _core.Endpoint[R],
        model: str,
        info: ServerInfo,
        query: str,
        docs: list[DocumentInput],
        sent: list[DocumentInput],
        instruction: str | None,
        limiter: asyncio.Semaphore,
        request_id: str,
        on_progress: ProgressCallback | None,
        deadline_at: float | None,
    ) -> R:
        """Score ``sent`` (what goes for each of ``docs``); the result holds ``docs``."""
        cache = None if info.listwise else self.config.cache
        if cache is None:
            call = await self._prepare(info, query, sent, instruction, limiter, deadline_at)
            parts = await self._send_batches(
                endpoint, model, call, docs, limiter, request_id, on_progress, deadline_at
            )
            return endpoint.result(parts, model, request_id)
        # Keys from the caller's text: the key covers all a cut depends on (window, what the
        # server adds, mode, instruction, query), so only misses are tokenized and cut.
        keys = self._pair_keys(info, query, instruction or self.config.instruction, sent)
        scores: list[float | None] = await self._cache_get(cache, keys)
        misses = [i for i, score in enumerate(scores) if score is None]
        _ACTIVITY.get().scope.cache(len(keys) - len(misses), len(misses))
        usage = Usage()
        served = model
        if misses:
            fetched, usage, served = await self._fetch_once(
                endpoint,
                model,
                info,
                query,
                instruction,
                sent,
                keys,
                misses,
                limiter,
                request_id,
                on_progress,
                deadline_at,
            )
            for i, score in zip(misses, fetched, strict=True):
                scores[i] = score
            await self._cache_set(cache, {keys[i]: fetched[n] for n, i in enumerate(misses)})
        elif on_progress is not None:
            on_progress(1, 1)
        return endpoint.from_scores(
            [s for s in scores if s is not None], docs, served, usage, request_id
        )

    async def _send_batches(
        self,
        endpoint: _core.Endpoint[R],
        model: str,
        call: PreparedCall,
        originals: Sequence[DocumentInput],
        limiter: asyncio.Semaphore,
        request_id: str,
        on_progress: ProgressCallback | None,
        deadline_at: float | None,
    ) -> list[Any]:
        """Every batch of ``call``, at most ``max_concurrency`` in flight; parsed parts."""
        # A listwise model scores the list as a whole: splitting it would change every score.
        batch_size = (
            None if self.info is not None and self.info.listwise else self.config.max_batch_size
        )
        batches = _core.plan_batches(call.documents, batch_size)
        url = self.base_url + endpoint.path
        scope = _ACTIVITY.get().scope
        # One query's batches share a key, so a consistent-hash router keeps them on the
        # replica whose prefix cache holds the query.
        routing_key = _core.routing_key(call.query) if self.config.routing_header else None
        if len(batches) == 1:  # the common case, without a task or a limiter
            with scope.batch(len(batches[0].texts)):
                body = await self.send(
                    "POST",
                    endpoint.path,
                    endpoint.payload(model, call, batches[0]),
                    f"{request_id}-0",
                    deadline_at,
                    routing_key=routing_key,
                )
            part = endpoint.parse(url, body, batches[0], originals)
            if on_progress is not None:
                on_progress(1, 1)
            return [part]
        done = 0

        async def run(number: int, batch: _core.Batch) -> Any:
            nonlocal done
            async with limiter:
                with scope.batch(len(batch.texts)):
                    body = await self.send(
                        "POST",
                        endpoint.path,
                        endpoint.payload(model, call, batch),
                        f"{request_id}-{number}",
                        deadline_at,
                        routing_key=routing_key,
                    )
            part = endpoint.parse(url, body, batch, originals)
            done += 1
            if on_progress is not None:
                on_progress(done, len(batches))
            return part

        return await _gather([run(n, b) for n, b in enumerate(batches)])

    # -- the score cache ----------------------------------------------------------------

    def _pair_keys(
        self, info: ServerInfo, query: str, instruction: str | None, docs: Sequence[DocumentInput]
    ) -> list[str]:
        config = self.config
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
                query,
            ]
        )
        return [pair_key(prefix, _core.document_identity(doc)) for doc in docs]

    async def _cache_get(self, cache: ScoreCache, keys: list[str]) -> list[float | None]:
        if asyncio.get_running_loop().time() < self._cache_down_until:
            return [None] * len(keys)  # failed a moment ago: do not pay its timeout again
        try:
            async with asyncio.timeout(cache.timeout):
                found = await cache.get_many(keys)
            if len(found) != len(keys):
                raise ValueError(f"{len(found)} values for {len(keys)} keys")
            return [
                s if isinstance(s, int | float) and not isinstance(s, bool) else None for s in found
            ]
        except Exception as exc:  # a cache never fails a call
            self._cache_failed("lookup", cache, exc)
            return [None] * len(keys)

    async def _cache_set(self, cache: ScoreCache, scores: dict[str, float]) -> None:
        if asyncio.get_running_loop().time() < self._cache_down_until:
            return
        try:
            async with asyncio.timeout(cache.timeout):
                await cache.set_many(scores)
        except Exception as exc:  # a cache never fails a call
            self._cache_failed("store", cache, exc)

    def _cache_failed(self, what: str, cache: ScoreCache, exc: Exception) -> None:
        _ACTIVITY.get().scope.cache_error()
        # Leave a failing cache alone for a second, so that a dead Redis costs one call in a
        # second its timeout rather than every call.
        self._cache_down_until = asyncio.get_running_loop().time() + CACHE_PAUSE_SECONDS
        self._warn_once(
            "cache",
            "rerank_plugins: cache %s failed (%s: %s) on %r; calls go to the server until it "
            "answers again (counted in rerank_cache_errors, warned once)",
            what,
            type(exc).__name__,
            exc,
            cache,
        )

    async def _fetch_once(
        self,
        endpoint: _core.Endpoint[R],
        model: str,
        info: ServerInfo,
        query: str,
        instruction: str | None,
        docs: list[DocumentInput],
        keys: list[str],
        misses: list[int],
        limiter: asyncio.Semaphore,
        request_id: str,
        on_progress: ProgressCallback | None,
        deadline_at: float | None,
    ) -> tuple[list[float], Usage, str]:
        """Scores of the missed pairs; a pair another call is fetching is waited for."""
        loop = asyncio.get_running_loop()
        inflight = _ACTIVITY.get().pool.inflight
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
        usage, served = Usage(), model
        scores: dict[int, float] = {}
        try:
            if owned:
                owned_docs = [docs[i] for i in owned]
                sub = await self._prepare(
                    info, query, owned_docs, instruction, limiter, deadline_at
                )
                every = endpoint.every()
                parts = await self._send_batches(
                    every,
                    model,
                    sub,
                    owned_docs,
                    limiter,
                    request_id,
                    on_progress,
                    deadline_at,
                )
                fetched = every.scores(parts, len(owned))
                usage, served = _core.usage_and_model(parts, model)
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
            more, more_usage, _ = await self._fetch_once(
                endpoint,
                model,
                info,
                query,
                instruction,
                docs,
                keys,
                refetch,
                limiter,
                request_id,
                None,
                deadline_at,
            )
            scores.update(zip(refetch, more, strict=True))
            usage += more_usage
        return [scores[i] for i in misses], usage, served

    # -- prompt mode and truncation -----------------------------------------------------

    async def _prepare(
        self,
        info: ServerInfo,
        query: str,
        docs: list[DocumentInput],
        instruction: str | None,
        limiter: asyncio.Semaphore,
        deadline_at: float | None,
    ) -> PreparedCall:
        mode = info.prompt_mode or "raw"
        instruction = instruction or self.config.instruction
        if self.config.truncate and info.max_model_len and docs:
            docs = await self._fit(info, mode, query, docs, instruction, limiter, deadline_at)
        return _core.prepare_call(mode, query, docs, instruction, info.supports_instruction)

    async def _fit(
        self,
        info: ServerInfo,
        mode: str,
        query: str,
        docs: list[DocumentInput],
        instruction: str | None,
        limiter: asyncio.Semaphore,
        deadline_at: float | None,
    ) -> list[DocumentInput]:
        """Cut documents that would overflow the window, so the prompt's end stays intact."""
        found = await self._window(info, mode, query, docs, instruction, deadline_at)
        if found is None:
            return docs
        long, budget = found
        model = self.config.model or info.model
        fitted = list(docs)

        texts = {i: doc for i in long if isinstance(doc := docs[i], str)}

        async def cut(i: int) -> None:
            async with limiter:
                fitted[i] = await self._cut_to(model, texts[i], budget, deadline_at)

        await _gather([cut(i) for i, text in texts.items() if _core.utf8_len(text) > budget])
        return fitted

    async def _window(
        self,
        info: ServerInfo,
        mode: str,
        query: str,
        docs: Sequence[DocumentInput],
        instruction: str | None,
        deadline_at: float | None,
    ) -> tuple[list[int], int] | None:
        """The documents that may overflow the window, and a document's budget in tokens.

        A document's budget is the window minus what the server adds to a pair (measured by
        the probe), minus the query side. Byte lengths bound token counts, so a call whose
        documents cannot overflow sends no tokenizer request at all (None), nor does a
        server without ``/tokenize``.
        """
        assert info.max_model_len is not None
        added = info.added_tokens
        if added is None:
            added = (
                _core.utf8_len(prompts.format_query("") + prompts.format_document(""))
                if mode == "server"
                else _core.UNKNOWN_ADDED_TOKENS
            )
        side, wrapper = _core.pair_sides(mode, query, instruction)
        window = info.max_model_len - added - _core.TRUNCATION_MARGIN
        bound = window - _core.utf8_len(side) - _core.utf8_len(wrapper)
        # Only text can be cut; an image's size is the server's to judge.
        long = [
            i for i, doc in enumerate(docs) if isinstance(doc, str) and _core.utf8_len(doc) > bound
        ]
        if not long or not self._can_tokenize:
            return None
        model = self.config.model or info.model
        try:
            side_tokens = len(await self._tokens(model, side + wrapper, deadline_at))
        except RerankStatusError as exc:
            if exc.status_code not in _NO_ROUTE:
                raise
            self._can_tokenize = False
            self._warn_once(
                "no-tokenize",
                "rerank_plugins: %s has no /tokenize (%d): documents longer than the model's "
                "window are sent uncut, and the server will reject them",
                self.base_url,
                exc.status_code,
            )
            return None
        budget = window - side_tokens
        if budget <= 0:
            raise RerankInputError(
                f"the query and prompt take {side_tokens + added} tokens, leaving no room for "
                f"documents in the model's window of {info.max_model_len} tokens"
            )
        return long, budget

    async def _tokens(self, model: str, text: str, deadline_at: float | None) -> list[int]:
        payload = {"model": model, "prompt": text, "add_special_tokens": False}
        body = await self.send("POST", "/tokenize", payload, None, deadline_at)
        return _core.tokens_of(self.base_url + "/tokenize", body)

    async def _cut_to(self, model: str, text: str, budget: int, deadline_at: float | None) -> str:
        tokens = await self._tokens(model, text, deadline_at)
        if len(tokens) <= budget:
            return text
        return await self._detokenize(model, tokens[:budget], deadline_at)

    async def _detokenize(self, model: str, tokens: list[int], deadline_at: float | None) -> str:
        payload = {"model": model, "tokens": tokens}
        body = await self.send("POST", "/detokenize", payload, None, deadline_at)
        return _core.detokenized(self.base_url + "/detokenize", body)

    async def _chunk_plan(
        self,
        info: ServerInfo,
        query: str,
        docs: list[DocumentInput],
        instruction: str | None,
        limiter: asyncio.Semaphore,
        deadline_at: float | None,
    ) -> _chunks.ChunkPlan | None:
        """The documents longer than the window, split into chunks that fit (None: none is)."""
        if not info.max_model_len or not docs:
            return None
        mode = info.prompt_mode or "raw"
        instruction = instruction or self.config.instruction
        found = await self._window(info, mode, query, docs, instruction, deadline_at)
        if found is None:
            return None
        long, budget = found
        model = self.config.model or info.model
        return await _chunks.split(
            docs,
            long,
            budget,
            lambda text: self._tokens(model, text, deadline_at),
            lambda tokens: self._detokenize(model, tokens, deadline_at),
            limiter,
            _gather,
        )


def _close_home(home: Home) -> None:
    """Close a home pool from outside its loop, as far as that loop allows."""
    loop = home.loop
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # a sync close() in async code on the home loop: close soon
        _CLOSING.add(task := loop.create_task(home.aclose()))
        task.add_done_callback(_CLOSING.discard)
    elif loop.is_running():  # home runs in another thread
        future = asyncio.run_coroutine_threadsafe(home.aclose(), loop)
        try:
            future.result(timeout=5)
        except Exception:  # a stuck loop keeps its sockets: nothing a close() could do
            future.cancel()
    elif running is None:  # an idle loop (run_until_complete between calls)
        loop.run_until_complete(home.aclose())
    # Else another loop runs in this thread: the idle home's loop closes its pool at its end.


# Tasks closing a home pool, kept referenced until they finish.
_CLOSING: set[asyncio.Task[None]] = set()


def _retrieve(future: asyncio.Future[float]) -> None:
    # Mark a failed shared fetch as seen even when no other call waited for it.
    if not future.cancelled():
        future.exception()


async def _gather(coros: Sequence[Any]) -> list[Any]:
    """Run coroutines together; the first failure cancels the rest (no batch left running)."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _transport_error(method: str, url: str, exc: httpx.TransportError) -> RerankError:
    if isinstance(exc, httpx.TimeoutException):
        return RerankTimeoutError(
            f"{method} {url} timed out ({type(exc).__name__}: {exc})", url=url
        )
    return RerankConnectionError(
        f"cannot connect to {url} ({method}): {exc or type(exc).__name__}. Is a vLLM server "
        "running there? Start one with: rerank-serve MODEL --port PORT",
        url=url,
    )
