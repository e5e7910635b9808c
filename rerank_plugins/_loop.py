"""A client's private event loop, in a daemon thread of its own; and a loop-end guard.

The sync twin runs every request on this loop, from any thread; so does the async client for
calls made on loops other than its home loop (see :mod:`._engine.pools`). Its pool is bound to
a loop that outlives the callers' loops: nothing leaks when a caller's loop closes,
concurrent first use cannot create two pools, and the sync twin enforces deadlines with the
same asyncio code as the async client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["IOLoop", "on_loop_end"]

T = TypeVar("T")


class IOLoop:
    """Starts lazily, restarts after :meth:`stop` or in a forked child, stops idempotently."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # A forked child has the loop object but not the thread that ran it.
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_forever, args=(loop,), name=self._name, daemon=True
                )
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    @property
    def running(self) -> bool:
        """Whether the loop's thread was started (and not stopped since)."""
        return self._loop is not None

    def owns(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` is this private loop."""
        return loop is self._loop

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on this loop's thread (where blocking on it would hang)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(
        self, coro: Coroutine[Any, Any, T], context: contextvars.Context | None = None
    ) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop in ``context``; cancelling the future cancels the task.

        The caller's context (copied) carries its context variables into the call, so a
        tracing span open in the caller is the parent of the call's span.
        """
        loop = self._running_loop()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        # The future stays pending while the task runs (as in run_coroutine_threadsafe), so
        # the caller can still cancel it; it is marked running only to take the outcome.
        def start() -> None:
            if future.cancelled():
                coro.close()
                return
            task = loop.create_task(coro, context=context)

            def finished(task: asyncio.Task[T]) -> None:
                if task.cancelled():
                    future.cancel()
                    return
                if not future.set_running_or_notify_cancel():
                    return
                if (error := task.exception()) is not None:
                    future.set_exception(error)
                else:
                    future.set_result(task.result())

            task.add_done_callback(finished)

            def cancel_task(done: concurrent.futures.Future[T]) -> None:
                if done.cancelled():
                    loop.call_soon_threadsafe(task.cancel)

            future.add_done_callback(cancel_task)

        loop.call_soon_threadsafe(start)
        return future

    def block_on(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it is done (sync callers)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a sync rerank call was made from the client's own I/O thread "
                "(e.g. inside on_progress); use the async client there"
            )
        future = self.submit(coro, contextvars.copy_context())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the caller stops the work as well
            raise

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from the caller's own loop."""
        return await asyncio.wrap_future(self.submit(coro, contextvars.copy_context()))

    def stop(self, final: Callable[[], Awaitable[None]] | None = None, wait: bool = True) -> None:
        """Run ``final`` on the loop (closing the pool), then stop the loop and its thread."""
        with self._lock:
            loop, thread, pid = self._loop, self._thread, self._pid
            self._loop = self._thread = None
        if loop is None or thread is None or pid != os.getpid() or loop.is_closed():
            return

        async def finish() -> None:
            try:
                if final is not None:
                    await final()
            finally:
                loop.stop()

        if threading.current_thread() is thread:
            loop.create_task(finish())
            return
        future = asyncio.run_coroutine_threadsafe(finish(), loop)
        if wait:
            try:
                future.result(timeout=5)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def on_loop_end(close: Callable[[], Awaitable[object]]) -> AsyncGenerator[None, None]:
    """Started on a loop (``await anext(guard)``), runs ``close`` when that loop ends.

    Asyncio tracks the async generators first iterated on a loop, and its
    ``shutdown_asyncgens()`` (called by ``asyncio.run`` and the runners built on it) closes
    them while the loop still runs, before it is closed: the one moment a connection pool of
    a caller's loop can be closed cleanly. Keep a reference to the generator while it guards.
    """
    try:
        yield
    finally:
        await close()
