"""Stopping a task whose first cancel is lost (``asyncio.wait_for`` before Python 3.12)."""

from __future__ import annotations

import asyncio

from jitsi_teleop.tasks import cancel_and_wait


async def _stops_within(task: asyncio.Task[object], seconds: float) -> bool:
    stopping = asyncio.ensure_future(cancel_and_wait(task))
    done, _ = await asyncio.wait([stopping], timeout=seconds)
    if not done:  # leave nothing running behind the test
        stopping.cancel()
    return bool(done) and task.done()


async def test_a_loop_whose_cancel_raced_a_reply_is_still_stopped() -> None:
    """The fault campaign's hang: a sender awaiting a reply under wait_for, the reply arriving
    in the same loop step as the cancel, then the loop waiting for work nobody will give it."""
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    no_more_work = asyncio.Event()

    async def sender() -> None:
        while True:
            await asyncio.wait_for(reply, 10.0)
            await no_more_work.wait()

    task = asyncio.ensure_future(sender())
    await asyncio.sleep(0)  # the sender is now inside wait_for
    reply.set_result(1)  # the reply lands ...
    assert await _stops_within(task, 5.0)  # ... as the stop begins: stopped all the same
    assert task.cancelled()


async def test_a_task_that_ignores_one_cancel_is_cancelled_again() -> None:
    ignored = 0

    async def stubborn() -> None:
        nonlocal ignored
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            ignored += 1
        await asyncio.Event().wait()

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    assert await _stops_within(task, 5.0)
    assert ignored == 1


async def test_none_finished_and_failed_tasks_return_at_once() -> None:
    await cancel_and_wait(None)

    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(failed), 1.0)  # its error is the stopper's to drop
    assert isinstance(failed.exception(), RuntimeError)
