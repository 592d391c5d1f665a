"""Stopping an asyncio task for sure.

``task.cancel(); await task`` can hang for good on Python < 3.12: ``asyncio.wait_for`` returns
the inner result when a cancel races with it, so the cancel is lost and a loop around it goes
on waiting (seen as a fault-campaign run that never ended: its sender loop sat on an event
nobody would set again). Cancelling until the task is really done cannot be lost that way.
"""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Future[object] | None, poll_s: float = 0.1) -> None:
    """Cancel ``task`` again every ``poll_s`` until it is done; its result or error is dropped
    (the caller is stopping it). Returns at once for None or a finished task."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=poll_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
