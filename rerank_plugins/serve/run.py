"""The run loop every launcher shares: ``rerank-serve``, ``rerank-cluster`` and ``python -m demo``.

:func:`run_until_signalled` starts a target from the main thread, waits until it is ready (a
signal interrupts the wait), then until a signal (SIGINT, SIGTERM or SIGHUP) or a failed
check, and stops it whatever happens.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Protocol

__all__ = [
    "STOP_SIGNALS",
    "Supervised",
    "ready_unless_stopped",
    "run_until_signalled",
    "stop_on_signals",
]

# The signals that stop a launcher: Ctrl-C, `kill`, and the terminal closing.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Supervised(Protocol):
    """What :func:`run_until_signalled` runs: a server, a cluster, the demo."""

    def start(self) -> object:
        """Start and return at once."""

    def wait_ready(self) -> object:
        """Block until ready; raise if it cannot be."""

    def stop(self) -> object:
        """Stop everything started; idempotent."""


@contextlib.contextmanager
def stop_on_signals(*signals: signal.Signals) -> Iterator[threading.Event]:
    """An event set by any of ``signals`` while the block runs (their handlers restored after)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ready_unless_stopped(wait_ready: Callable[[], object], stop: threading.Event) -> bool:
    """Run ``wait_ready`` in a thread, so that a signal can interrupt the start-up.

    True once it returned; False when ``stop`` was set first; its exception is raised here.
    """
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            wait_ready()
        except BaseException as exc:
            failure.append(exc)
            stop.set()

    waiter = threading.Thread(target=wait, name="rerank-wait-ready", daemon=True)
    waiter.start()
    while waiter.is_alive() and not stop.is_set():
        waiter.join(0.2)
    if failure:
        raise failure[0]
    return not stop.is_set()


def _nothing() -> None:
    return None


def run_until_signalled(
    target: Supervised,
    *,
    on_started: Callable[[], None] = _nothing,
    on_ready: Callable[[], None] = _nothing,
    check: Callable[[], int | None] = _nothing,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> int:
    """Start ``target``, wait until it is ready, then until a signal; always stop it.

    ``start`` runs on the calling thread (the main one: children's parent-death signal is tied
    to the thread that spawned them). ``check`` runs twice a second once ready; an exit code
    from it ends the run. Returns 0 after a signal; ``target``'s exceptions propagate.
    """
    with stop_on_signals(*signals) as stop:
        try:
            target.start()
            on_started()
            if ready_unless_stopped(target.wait_ready, stop):
                on_ready()
            while not stop.is_set():
                code = check()
                if code is not None:
                    return code
                stop.wait(0.5)
            return 0
        finally:
            target.stop()
