"""Bounded waits keep a cancellation that arrives as the wait completes."""

from __future__ import annotations

import asyncio

import pytest

from taskgate.core.aio import wait_set


def test_a_cancel_that_meets_the_event_still_cancels() -> None:
    """The event is set and the waiter cancelled in one loop iteration (the race in
    which 3.11's ``wait_for`` returns and the cancellation is lost): the loop around
    the wait must end."""

    async def scenario() -> None:
        event = asyncio.Event()
        rounds = 0

        async def loop() -> None:
            nonlocal rounds
            while True:
                await wait_set(event, 10)
                event.clear()
                rounds += 1

        for _ in range(50):
            task = asyncio.create_task(loop())
            await asyncio.sleep(0)
            event.set()
            await asyncio.sleep(0)  # the wait's inner future completes...
            task.cancel()  # ...and the cancel comes before the waiter resumes
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await task

    asyncio.run(scenario())


def test_wait_set_reports_whether_the_event_was_set() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        missed = await wait_set(event, 0.01)
        event.set()
        return missed, await wait_set(event, 0.01)

    assert asyncio.run(scenario()) == (False, True)
