"""A loopback HTTP fault proxy in front of a real server, and the reliability suite's ledger.

``FaultProxy(upstream_base_url)`` listens on 127.0.0.1 (a free port) in its own thread with its
own asyncio loop, so sync and async clients, threads and ``asyncio.run()`` calls can all use it.
Each request is read (HTTP/1.1, keep-alive), matched against the armed faults in the order they
were added, and either forwarded to the upstream (a fresh upstream connection per request, so
the proxy holds no idle upstream sockets) or answered with the fault.

Faults (each takes ``path=`` (exact path, a tuple of paths, or None for every path), ``times=``
(how many matching requests it fires on; None: all) and ``skip=`` (matching requests let
through before it starts firing))::

    proxy.reset(path="/rerank", times=1)            # RST (SO_LINGER 0) after reading the request
    proxy.reset(..., hard=False)                    # plain close (FIN), no reply
    proxy.status(503, times=2, retry_after="1")     # then pass through; "1", an HTTP date, "soon"
    proxy.trickle(chunk=16, interval=0.5)           # the real upstream body, 16 bytes every 0.5 s
                                                    # (give_up_after=s: then reset, bounds a test)
    proxy.stall()                                   # read the request, never answer
    proxy.delay(0.4)                                # answer, but 0.4 s late
    proxy.replace_body(b"not json")                 # 200 replies get this body instead
    proxy.replace_body(lambda body: ...)            # ... or f(parsed JSON) -> new JSON (or bytes)

It also serves as a plain-HTTP forward proxy: a request whose target is an absolute URL (what
a client configured with ``proxy=`` or ``HTTP_PROXY`` sends) goes to that URL, and
``proxy.stats.forwarded`` counts it.

``proxy.stats`` counts connections accepted, open, peak open, requests per path, faults
fired, and requests whose client went away while a stall, trickle or delay held the answer
(``stats.abandoned``: a client's deadline seen from the server's side). ``proxy.clear()``
disarms every fault and ``proxy.reset_stats()`` zeroes the counters.
``proxy.stop()`` closes every connection, stops the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

# Every route a client may use for each endpoint: arm faults on all of them.
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank")
SCORE_PATHS = ("/score", "/v1/score")

__all__ = [
    "RERANK_PATHS",
    "SCORE_PATHS",
    "Fault",
    "FaultProxy",
    "Ledger",
    "ProxyStats",
    "fd_count",
    "ledger_for",
    "wait_until",
]

BodyReplacement = bytes | str | Callable[[Any], Any]


@dataclass
class Fault:
    """One armed fault; see the module docstring for the kinds."""

    kind: str  # "reset", "status", "trickle", "stall", "delay", "body"
    path: str | tuple[str, ...] | None = None
    times: int | None = 1
    skip: int = 0
    status_code: int = 503
    retry_after: str | None = None
    hard: bool = True
    chunk: int = 16
    interval: float = 0.5
    body: BodyReplacement | None = None
    give_up_after: float | None = None  # trickle: reset the connection after this long
    fired: int = 0
    seen: int = 0

    def matches(self, path: str) -> bool:
        if self.path is None:
            return True
        if isinstance(self.path, str):
            return path == self.path
        return path in self.path

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass
class ProxyStats:
    """What the proxy saw since the last ``reset_stats``."""

    accepted: int = 0
    open: int = 0
    peak: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0  # requests with an absolute URL (as to a forward proxy)
    # Requests per path whose client closed the connection while a fault held the answer
    # (not those the proxy itself gave up on, nor those cut by the proxy's stop).
    abandoned: Counter[str] = field(default_factory=Counter)

    def hits(self, paths: str | tuple[str, ...]) -> int:
        """Requests seen on ``paths`` (one path or several, e.g. every rerank route)."""
        return sum(self.requests[p] for p in _paths(paths))

    def abandoned_on(self, paths: str | tuple[str, ...]) -> int:
        """Requests on ``paths`` whose client went away while a fault held the answer."""
        return sum(self.abandoned[p] for p in _paths(paths))


def _paths(paths: str | tuple[str, ...]) -> tuple[str, ...]:
    return (paths,) if isinstance(paths, str) else paths


class _Stop(Exception):
    """Raised inside a connection handler to drop the connection."""


class _ClientLeft(_Stop):
    """The client closed the connection while a fault held its answer."""


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.stats = ProxyStats()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy->{self.upstream}")
        self._thread.daemon = True
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=0),
        )
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=256)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._http is not None:
            await self._http.aclose()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ----------------------------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_stats(self) -> None:
        with self._lock:
            still_open = self.stats.open
            self.stats = ProxyStats(open=still_open, peak=still_open)

    def reset(
        self, path: Any = None, times: int | None = 1, *, hard: bool = True, skip: int = 0
    ) -> Fault:
        return self.add(Fault("reset", path, times, skip, hard=hard))

    def status(
        self,
        status_code: int = 503,
        path: Any = None,
        times: int | None = 1,
        *,
        retry_after: str | None = None,
        skip: int = 0,
    ) -> Fault:
        return self.add(
            Fault("status", path, times, skip, status_code=status_code, retry_after=retry_after)
        )

    def trickle(
        self,
        path: Any = None,
        times: int | None = None,
        *,
        chunk: int = 16,
        interval: float = 0.5,
        skip: int = 0,
        give_up_after: float | None = None,
    ) -> Fault:
        fault = Fault("trickle", path, times, skip, chunk=chunk, interval=interval)
        fault.give_up_after = give_up_after
        return self.add(fault)

    def stall(self, path: Any = None, times: int | None = None, *, skip: int = 0) -> Fault:
        return self.add(Fault("stall", path, times, skip))

    def delay(
        self, seconds: float, path: Any = None, times: int | None = None, *, skip: int = 0
    ) -> Fault:
        return self.add(Fault("delay", path, times, skip, interval=seconds))

    def replace_body(
        self, body: BodyReplacement, path: Any = None, times: int | None = None, *, skip: int = 0
    ) -> Fault:
        return self.add(Fault("body", path, times, skip, body=body))

    def _pick(self, path: str) -> Fault | None:
        with self._lock:
            self.stats.requests[path] += 1
            for fault in self._faults:
                if fault.exhausted() or not fault.matches(path):
                    continue
                fault.seen += 1
                if fault.seen <= fault.skip:
                    continue
                fault.fired += 1
                self.stats.faults[fault.kind] += 1
                return fault
        return None

    # --- connections -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self.stats.accepted += 1
            self.stats.open += 1
            self.stats.peak = max(self.stats.peak, self.stats.open)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                keep_alive = await self._serve(request, reader, writer)
                if not keep_alive:
                    break
        except (_Stop, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            with self._lock:
                self.stats.open -= 1
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)

    async def _serve(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            return await self._serve_one(request, reader, writer)
        except _ClientLeft:
            with self._lock:
                self.stats.abandoned[request.path] += 1
            raise _Stop from None

    async def _serve_one(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        fault = self._pick(request.path)
        kind = fault.kind if fault else None
        if fault is not None and kind == "reset":
            sock = writer.get_extra_info("socket")
            if fault.hard and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if fault.hard:
                writer.transport.abort()
            else:
                writer.close()
            raise _Stop
        if fault is not None and kind == "stall":
            # Until the client goes away (EOF) or the proxy stops; never a byte back.
            with contextlib.suppress(ConnectionError):  # a reset is going away too
                while await reader.read(65536):
                    pass
            raise _ClientLeft
        if fault is not None and kind == "status":
            body = json.dumps(
                {"error": {"message": f"fault proxy: {fault.status_code}", "type": "fault"}}
            ).encode()
            headers = [("Content-Type", "application/json")]
            if fault.retry_after is not None:
                headers.append(("Retry-After", fault.retry_after))
            await _write_response(writer, fault.status_code, headers, body)
            return request.keep_alive
        if fault is not None and kind == "delay":
            await asyncio.sleep(fault.interval)
            if reader.at_eof():
                raise _ClientLeft  # nobody to answer: the client gave up during the delay
        status, headers, body = await self._forward(request)
        if fault is not None and kind == "body" and status == 200:
            try:
                body = _replaced(body, fault.body)
            except Exception:  # a replacement that does not fit this reply: pass it through
                with self._lock:
                    self.stats.faults["body-not-applied"] += 1
        if fault is not None and kind == "trickle":
            await _write_response(
                writer,
                status,
                headers,
                body,
                fault.chunk,
                fault.interval,
                reader,
                fault.give_up_after,
            )
        else:
            await _write_response(writer, status, headers, body)
        return request.keep_alive

    async def _forward(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._http is not None
        headers = [
            (k, v)
            for k, v in request.headers
            if k.lower() not in ("host", "connection", "content-length", "keep-alive")
        ]
        absolute = request.target.startswith(("http://", "https://"))
        if absolute:
            with self._lock:
                self.stats.forwarded += 1
        try:
            response = await self._http.request(
                request.method,
                request.target if absolute else self.upstream + request.target,
                headers=headers,
                content=request.body,
            )
        except httpx.HTTPError as exc:
            body = json.dumps({"error": {"message": f"fault proxy upstream: {exc!r}"}}).encode()
            return 502, [("Content-Type", "application/json")], body
        kept = [
            (k, v)
            for k, v in response.headers.items()
            if k.lower() in ("content-type", "x-request-id", "retry-after")
        ]
        return response.status_code, kept, response.content


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        if self.target.startswith(("http://", "https://")):  # a forward proxy's request
            return urlsplit(self.target).path
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        return not any(k.lower() == "connection" and v.lower() == "close" for k, v in self.headers)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    if any(k.lower() == "transfer-encoding" for k, _ in headers):
        raise ValueError("chunked requests are not supported by the fault proxy")
    body = await reader.readexactly(length) if length else b""
    return _Request(method, target, headers, body)


_REASONS = {200: "OK", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}


async def _write_response(
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    chunk: int = 0,
    interval: float = 0.0,
    reader: asyncio.StreamReader | None = None,
    give_up_after: float | None = None,
) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    head += [f"{k}: {v}" for k, v in headers]
    head += [f"Content-Length: {len(body)}", "Connection: keep-alive", "", ""]
    writer.write("\r\n".join(head).encode("latin-1"))
    if not chunk:
        writer.write(body)
        await writer.drain()
        return
    started = time.monotonic()
    for start in range(0, len(body), chunk):
        if give_up_after is not None and time.monotonic() - started > give_up_after:
            writer.transport.abort()  # bounds a test against a client that never gives up
            raise _Stop
        writer.write(body[start : start + chunk])
        try:
            await writer.drain()
        except ConnectionError:
            raise _ClientLeft from None
        if start + chunk < len(body):
            await asyncio.sleep(interval)
        if reader is not None and reader.at_eof():
            raise _ClientLeft


def _replaced(body: bytes, replacement: BodyReplacement | None) -> bytes:
    if isinstance(replacement, bytes):
        return replacement
    if isinstance(replacement, str):
        return replacement.encode()
    assert replacement is not None
    new = replacement(json.loads(body))
    if isinstance(new, bytes):
        return new
    if isinstance(new, str):
        return new.encode()
    # allow_nan: Python's json writes NaN/Infinity tokens, which Python's parser accepts.
    return json.dumps(new, allow_nan=True).encode()


# --- the suite's ledger ------------------------------------------------------------------------


class Ledger:
    """Counts of the reliability suite, written as JSON and shown in the terminal summary.

    ``case(cls)`` counts one case of a class; ``typed(cls, exc)`` notes a typed error seen;
    ``bug(cls, exc)`` a non-typed exception; ``timed(cls, deadline)`` measures a call and keeps
    the longest time over a deadline; ``peak(name, seen, limit)`` keeps connection peaks.
    Registered as a pytest plugin by the suite's session fixture.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cases: Counter[str] = Counter()
        self.typed_errors: dict[str, Counter[str]] = {}
        self.bugs: Counter[str] = Counter()
        self.bug_examples: list[str] = []
        self.max_over_deadline = 0.0
        self.max_over_where = ""
        self.deadline_calls = 0
        self.peaks: dict[str, dict[str, int]] = {}

    def case(self, cls: str, n: int = 1) -> None:
        self.cases[cls] += n

    def typed(self, cls: str, exc: BaseException) -> None:
        self.typed_errors.setdefault(cls, Counter())[type(exc).__name__] += 1

    def bug(self, cls: str, exc: BaseException) -> None:
        self.bugs[cls] += 1
        if len(self.bug_examples) < 20:
            self.bug_examples.append(f"{cls}: {type(exc).__name__}: {str(exc)[:160]}")

    def over_deadline(self, where: str, elapsed: float, deadline: float) -> None:
        self.deadline_calls += 1
        over = elapsed - deadline
        if over > self.max_over_deadline:
            self.max_over_deadline, self.max_over_where = over, where

    @contextlib.contextmanager
    def timed(self, where: str, deadline: float) -> Iterator[Callable[[], float]]:
        start = time.monotonic()
        elapsed: list[float] = []
        try:
            yield lambda: elapsed[0] if elapsed else time.monotonic() - start
        finally:
            elapsed.append(time.monotonic() - start)
            self.over_deadline(where, elapsed[0], deadline)

    def peak(self, name: str, seen: int, limit: int) -> None:
        self.peaks[name] = {"peak": seen, "limit": limit}

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases_per_class": dict(self.cases),
            "cases_total": sum(self.cases.values()),
            "typed_errors_by_class": {k: dict(v) for k, v in self.typed_errors.items()},
            "bugs_non_typed_exceptions": sum(self.bugs.values()),
            "bugs_by_class": dict(self.bugs),
            "bug_examples": self.bug_examples,
            "calls_with_deadline": self.deadline_calls,
            "max_seconds_over_deadline": round(self.max_over_deadline, 3),
            "max_over_deadline_case": self.max_over_where,
            "peak_connections": self.peaks,
        }

    # pytest hooks (the ledger is registered as a plugin)
    def pytest_sessionfinish(self) -> None:
        if not self.cases:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.cases:
            return
        data = self.as_dict()
        terminalreporter.write_sep("-", "reliability summary")
        terminalreporter.write_line(
            f"cases: {data['cases_total']} {data['cases_per_class']}; "
            f"bugs (non-typed exceptions): {data['bugs_non_typed_exceptions']}"
        )
        terminalreporter.write_line(
            f"longest time over a deadline: {data['max_seconds_over_deadline']:.3f} s "
            f"({data['max_over_deadline_case'] or 'none over'}) "
            f"across {data['calls_with_deadline']} calls with a deadline"
        )
        for name, peak in data["peak_connections"].items():
            terminalreporter.write_line(
                f"peak connections {name}: {peak['peak']} (limit {peak['limit']})"
            )
        terminalreporter.write_line(f"written to {self.path}")


LEDGER_PLUGIN = "reliability-ledger"


def ledger_for(config: Any) -> Ledger:
    """The session's ledger, registered as a pytest plugin on first use."""
    plugin = config.pluginmanager.get_plugin(LEDGER_PLUGIN)
    if plugin is None:
        from support.servers import ARTIFACTS

        plugin = Ledger(ARTIFACTS / "reliability_summary.json")
        config.pluginmanager.register(plugin, LEDGER_PLUGIN)
    assert isinstance(plugin, Ledger)
    return plugin


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last value."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return predicate()
        time.sleep(0.02)
    return True
