"""Connection pools, which event loop a call runs on, and how each pool is closed.

A pool (an ``httpx.AsyncClient``) belongs to one event loop. A client has up to two:

- its **home pool**, on the event loop of the async client's caller. A call made on that loop
  runs there directly: no hop to another thread, which would cost about 0.15 ms a call (a
  tenth of a 10-document call against a local server). The pool is closed when that loop
  ends (``asyncio.run`` and every runner built on it call ``shutdown_asyncgens``), by
  :meth:`AsyncRerankClient.aclose`, or when the client is collected; the next loop to call
  then becomes home.
- its **I/O-thread pool**, on the client's private loop (:mod:`._loop`): for the sync twin,
  for async calls from any loop while another loop is home, and for every call of a client
  given its own ``transport`` or ``http_client`` (whose state must stay on one loop).

Each pool holds at most ``max_connections`` connections. :class:`Pools` makes that choice
for every call and closes both; :class:`PoolState` is its read-only snapshot for tests and
diagnostics.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import weakref
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from .._loop import IOLoop, on_loop_end
from ..config import RerankConfig
from ..errors import RerankConfigError

__all__ = ["Home", "Pool", "PoolState", "Pools", "tls_setting"]

T = TypeVar("T")

_HEADERS = {"User-Agent": "rerank-plugins/0.1", "Accept": "application/json"}


def _transport_for(client: httpx.AsyncClient, base_url: str) -> httpx.AsyncBaseTransport | None:
    """The transport ``client`` sends requests for ``base_url`` through (a proxy or not).

    ``_transport_for_url`` is httpx's own choice among its mounts (``proxy``, the proxy
    environment variables); without it (another httpx) every request goes through
    ``client.request``, which is slower only.
    """
    pick = getattr(client, "_transport_for_url", None)
    if pick is None:
        return None
    try:
        transport = pick(httpx.URL(base_url))
    except httpx.InvalidURL:
        return None  # ``client.request`` raises it, where the caller expects it
    return transport if isinstance(transport, httpx.AsyncBaseTransport) else None


class _BearerAuth(httpx.Auth):
    """Adds the API key at send time, so no header dict holding it sits in a local variable."""

    def __init__(self, key: str) -> None:
        self._value = f"Bearer {key}"

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = self._value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.apply(request)
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth('***')"


def tls_setting(verify: object, cert: object) -> ssl.SSLContext | bool:
    """Httpx's ``verify`` from ours: a context when a CA path or a client certificate is given."""
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise RerankConfigError("pass the client certificate inside your SSLContext, not cert=")
        return verify
    if cert is None and isinstance(verify, bool):
        return verify
    if isinstance(verify, str):
        if os.path.isdir(verify):
            context = ssl.create_default_context(capath=verify)
        else:
            context = ssl.create_default_context(cafile=verify)
    elif verify:
        import certifi  # httpx's own default CA bundle (a dependency of httpx)

        context = ssl.create_default_context(cafile=certifi.where())
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if isinstance(cert, str):
        context.load_cert_chain(cert)
    elif isinstance(cert, tuple):
        context.load_cert_chain(*cert)
    return context


class Pool:
    """The HTTP client of one event loop, and what else is bound to that loop."""

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
        self._transport = transport
        self._user_http = http_client
        # Built from the config alone (no caller's transport or client): any loop may hold one.
        self.ours = transport is None and http_client is None
        self._own: httpx.AsyncClient | None = None
        # The transport our own client would send a request to the server through (its
        # proxy choice included), once known; None: send through the client itself.
        self._direct: httpx.AsyncBaseTransport | None = None
        self._urls: dict[str, httpx.URL] = {}
        self._extensions = {"timeout": httpx.Timeout(config.timeout, pool=None).as_dict()}
        self._pid = os.getpid()
        # Per request, not on the pool: a caller's own http_client gets the key as well.
        self.auth = _BearerAuth(config.api_key) if config.api_key else None
        self.slots: asyncio.Semaphore | None = None
        self.info_lock: asyncio.Lock | None = None
        # Pairs being fetched by some call: identical concurrent misses wait for one request.
        self.inflight: dict[str, asyncio.Future[float]] = {}

    def http(self) -> httpx.AsyncClient:
        if self._pid != os.getpid():
            # A forked child: the parent's pool and locks belong to a loop the child does
            # not run. Drop them (closing would touch the parent's sockets) and start anew.
            self._own, self.slots, self.info_lock = None, None, None
            self._direct = None
            self.inflight = {}
            self._pid = os.getpid()
        if self._own is None and self._user_http is None:
            config = self.config
            limit = config.max_connections
            self._own = httpx.AsyncClient(
                transport=self._transport,
                verify=tls_setting(config.verify, config.cert),
                proxy=config.proxy,
                trust_env=config.trust_env,
                timeout=httpx.Timeout(config.timeout, pool=None),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                headers=_HEADERS,
            )
            self._direct = _transport_for(self._own, config.base_url)
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.config.max_connections)
            self.info_lock = asyncio.Lock()
        return self._user_http or self._own  # type: ignore[return-value]

    async def request(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: dict[str, str],
        with_key: bool,
    ) -> httpx.Response:
        """One exchange, its body read whole.

        A pool of our own sends straight to its transport: ``AsyncClient.request`` adds
        about 0.25 ms of CPU a request (cookie jar, auth and redirect machinery, hooks) that
        a rerank call never uses, as much as a whole 1,000-document reply costs to parse.
        A caller's own ``http_client`` is used as given, with whatever it was set up to do.
        """
        http = self.http()
        direct = self._direct
        if direct is None:
            return await http.request(
                method, url, content=content, headers=headers, auth=self.auth if with_key else None
            )
        target = self._urls.get(url)
        if target is None:
            target = self._urls[url] = httpx.URL(url)
        request = httpx.Request(
            method,
            target,
            content=content,
            headers={**_HEADERS, **headers},
            extensions=self._extensions,
        )
        if with_key and self.auth is not None:
            self.auth.apply(request)
        response = await direct.handle_async_request(request)
        try:
            await response.aread()
        except BaseException:
            await response.aclose()  # a connection half-read must not go back to the pool
            raise
        return response

    async def aclose(self) -> None:
        own, self._own = self._own, None
        self._direct = None
        self.slots = self.info_lock = None
        if own is not None:
            await own.aclose()


class Home:
    """A caller's event loop that calls run on directly, with a pool of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: RerankConfig) -> None:
        self.loop = loop
        self.pool = Pool(config)
        self.pid = os.getpid()
        self.ended = False
        self._guard = on_loop_end(self._end)
        self.watching = False

    def usable_from(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop is self.loop and not self.ended and self.pid == os.getpid()

    def alive(self) -> bool:
        """Whether this loop may still call (so another loop must not take its place)."""
        return not self.ended and self.pid == os.getpid() and not self.loop.is_closed()

    async def watch(self) -> None:
        """Start the guard on the loop, so the loop's shutdown closes the pool (once)."""
        if not self.watching:
            self.watching = True
            await anext(self._guard)

    async def aclose(self) -> None:
        """Close the pool now, on the home loop."""
        await self._guard.aclose()  # runs the guard's ``finally`` if it was started
        await self._end()

    async def _end(self) -> None:
        self.ended = True
        await self.pool.aclose()


@dataclass(frozen=True)
class PoolState:
    """A snapshot of a client's loops and pools, for tests and diagnostics (changes nothing).

    ``home_loop``: the caller's loop that calls run on directly (None: none yet, or closed);
    ``home_http`` and ``io_http``: the HTTP clients of the home pool and of the I/O-thread
    pool (None until first used, or a caller's own ``http_client``); ``io_running``: whether
    the I/O thread runs; ``io_sends_direct``: whether the I/O pool sends straight to its
    transport rather than through ``AsyncClient.request``.
    """

    home_loop: asyncio.AbstractEventLoop | None
    home_http: httpx.AsyncClient | None
    io_running: bool
    io_http: httpx.AsyncClient | None
    io_sends_direct: bool


class Pools:
    """A client's two pools (home's and the I/O thread's) and the choice between them."""

    def __init__(self, io_pool: Pool) -> None:
        self.config = io_pool.config
        self.io = IOLoop("rerank-plugins-io")
        self.io_pool = io_pool
        # A caller's own transport or HTTP client keeps its state on one loop: the I/O loop.
        self._may_adopt = io_pool.ours
        self._home: Home | None = None
        self._home_lock = threading.Lock()
        # Closes the I/O pool and stops the thread once no facade holds the engine (or at
        # exit). A home pool is closed by its guard, which the loop finishes on collection.
        weakref.finalize(self, self.io.stop, self.io_pool.aclose)

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

    def here(self) -> Pool:
        """The pool of the running loop: home's, or the I/O loop's."""
        home = self._home
        if home is not None and home.usable_from(asyncio.get_running_loop()):
            return home.pool
        return self.io_pool

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
        self.io.stop(self.io_pool.aclose)

    def state(self) -> PoolState:
        """A snapshot of the loops and pools (for tests and diagnostics)."""
        home = self._home
        live = home is not None and not home.ended
        return PoolState(
            home_loop=home.loop if home is not None and live else None,
            home_http=home.pool._own if home is not None and live else None,
            io_running=self.io.running,
            io_http=self.io_pool._own,
            io_sends_direct=self.io_pool._direct is not None,
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
