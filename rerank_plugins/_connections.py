"""Connection pools, and which event loop a call runs on.

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

Each pool holds at most ``max_connections`` connections.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Generator

import httpx

from ._loop import on_loop_end
from .config import RerankConfig
from .errors import RerankConfigError

__all__ = ["Home", "Pool", "tls_setting"]

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
        self._config = config
        self._transport = transport
        self._user_http = http_client
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
            config = self._config
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
            self.slots = asyncio.Semaphore(self._config.max_connections)
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
