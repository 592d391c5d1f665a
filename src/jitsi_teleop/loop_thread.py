"""An asyncio event loop in its own thread, for ROS adapters whose executor owns the main thread.

rclpy callbacks run in the executor's thread and the asyncio core runs here. The hand-off is
``call_soon_threadsafe`` (a few microseconds), never a queue polled on a timer; a busy stream
hands over in batches (:class:`Handoff`): one loop wake-up for whatever arrived meanwhile.

The loop is uvloop's where it is installed (the ``speed`` extra; measured: the selector loop's
own bookkeeping was a large part of the asyncio thread's CPU at 100-1000 Hz) and asyncio's
otherwise; ``$JITSI_TELEOP_UVLOOP=0`` forces asyncio's. The code runs the same on both.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")
UVLOOP_ENV = "JITSI_TELEOP_UVLOOP"
log = logging.getLogger(__name__)


def uvloop_wanted() -> bool:
    return os.environ.get(UVLOOP_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed and not switched off, else asyncio's."""
    if uvloop_wanted():
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio`` (for reports and diagnostics)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on :func:`new_event_loop`'s loop."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class LoopThread:
    """Owns one event loop running forever in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "asyncio") -> None:
        self.loop = new_event_loop()
        self.kind = loop_kind(self.loop)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        # cancel what is left so that coroutines get their finally blocks
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine in the loop; the returned future can be waited on from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine in the loop and wait for its result (never call from the loop)."""
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain callback in the loop from another thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def handoff(self, consume: Callable[[T], None]) -> Handoff[T]:
        """A batching hand-off into this loop that calls ``consume(item)`` for each item."""
        return Handoff(self.loop, consume)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class Handoff(Generic[T]):
    """Items from one thread to a loop: ``put`` appends and wakes the loop only when no
    wake-up is pending, so a burst (a driver's joint state and wrench, published back to
    back) costs one ``call_soon_threadsafe`` (a syscall and a loop iteration) instead of
    one each. Items are consumed in order, every one of them (counters stay exact).

    Thread safety rests on ``deque.append``/``popleft`` being atomic and on clearing the
    flag *before* draining: an item put after the flag is cleared schedules its own drain.
    """

    __slots__ = ("_consume", "_items", "_loop", "_scheduled", "wakeups")

    def __init__(self, loop: asyncio.AbstractEventLoop, consume: Callable[[T], None]) -> None:
        self._loop = loop
        self._consume = consume
        self._items: collections.deque[T] = collections.deque()
        self._scheduled = False
        self.wakeups = 0  #: loop wake-ups requested (≤ items put)

    def put(self, item: T) -> None:
        """From any thread."""
        self._items.append(item)
        if not self._scheduled:
            self._scheduled = True
            self.wakeups += 1
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed (shutting down): nothing to hand to
                self._scheduled = False

    def _drain(self) -> None:
        self._scheduled = False
        items, consume = self._items, self._consume
        while items:
            try:
                consume(items.popleft())
            except Exception:  # one bad item must not strand the ones behind it
                log.exception("hand-off consumer failed")
