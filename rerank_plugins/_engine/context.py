"""One call's state as one object (:class:`CallContext`), and the engine's warn-once log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..config import RerankConfig
from ..errors import RerankTimeoutError
from ..telemetry import SILENT, CallScope

if TYPE_CHECKING:
    from ..types import ServerInfo
    from .pools import Pool

__all__ = ["CallContext", "ProgressCallback", "WarnOnce", "gather_or_cancel", "logger"]

logger = logging.getLogger("rerank_plugins")

ProgressCallback = Callable[[int, int], None]


class CallContext:
    """One call's state, handed down as one object: its pool, deadline, watchers and server.

    ``async with CallContext(...)`` runs the call under its deadline (``asyncio.timeout``), so
    every await inside it, retries and their waits included, counts against ``deadline``; on
    expiry the error names what the call was ``doing``. A class rather than an ``async def``
    wrapper: it adds no frame that every resumption of the call's innermost await passes.
    """

    __slots__ = (
        "_limiter",
        "_timer",
        "config",
        "doing",
        "info",
        "model",
        "on_progress",
        "pool",
        "request_id",
        "scope",
    )

    def __init__(
        self,
        config: RerankConfig,
        pool: Pool,
        scope: CallScope = SILENT,
        request_id: str = "",
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.pool = pool  # the running loop's: home's or the I/O thread's
        self.scope = scope  # metrics and tracing of this call
        self.request_id = request_id  # X-Request-Id stem; each batch adds "-<number>"
        self.on_progress = on_progress
        self.info: ServerInfo | None = None  # what the server is, once learnt
        self.model = config.model or ""  # the model asked for, once known
        self.doing = "starting"  # for the deadline's message
        self._limiter: asyncio.Semaphore | None = None
        self._timer: asyncio.Timeout | None = None

    @property
    def limiter(self) -> asyncio.Semaphore:
        """At most ``max_concurrency`` of this call's requests in flight (made on first use)."""
        if self._limiter is None:
            self._limiter = asyncio.Semaphore(self.config.max_concurrency)
        return self._limiter

    def time_left(self) -> float | None:
        """Seconds until the deadline; None without one."""
        when = self._timer.when() if self._timer is not None else None
        return None if when is None else when - asyncio.get_running_loop().time()

    async def __aenter__(self) -> CallContext:
        deadline = self.config.deadline
        if deadline is not None:
            self._timer = asyncio.timeout(deadline)
            await self._timer.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timer = self._timer
        if timer is None:
            return
        try:
            # On expiry it turns the call's cancellation into TimeoutError.
            await timer.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if not timer.expired():
                raise
            raise RerankTimeoutError(
                f"deadline of {self.config.deadline:g}s passed during {self.doing}",
                url=self.config.base_url,
            ) from None


class WarnOnce:
    """Logs each kind of warning once per engine: a misconfiguration is reported, not spammed."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, key: str, message: str, *args: object) -> None:
        if key not in self._seen:
            self._seen.add(key)
            logger.warning(message, *args)


async def gather_or_cancel(coros: Sequence[Any]) -> list[Any]:
    """Run coroutines together; the first failure cancels the rest (no request left running)."""
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
