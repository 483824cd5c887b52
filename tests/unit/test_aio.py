"""Bounded waits keep a cancellation that arrives as the wait completes."""

from __future__ import annotations

import asyncio

import pytest

from taskgate.core.aio import start_eagerly, wait_set


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


def test_start_eagerly_runs_a_coroutine_that_does_not_wait_in_the_callers_step() -> None:
    async def scenario() -> tuple[asyncio.Future[None] | None, list[str]]:
        done: list[str] = []

        async def write() -> None:
            done.append("written")

        started = start_eagerly(write())
        return started, done  # no loop turn in between

    assert asyncio.run(scenario()) == (None, ["written"])


def test_start_eagerly_hands_a_waiting_coroutine_to_a_task() -> None:
    """The part before the first wait runs at once; the rest runs in a task and
    sees what the future resolved to."""

    async def scenario() -> list[str]:
        steps: list[str] = []
        room: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def write() -> None:
            steps.append("before")
            steps.append(await room)
            await asyncio.sleep(0)
            steps.append("after")

        rest = start_eagerly(write())
        assert steps == ["before"] and rest is not None and not rest.done()
        room.set_result("woken")
        async with asyncio.timeout(5):
            await rest
        return steps

    assert asyncio.run(scenario()) == ["before", "woken", "after"]


def test_start_eagerly_raises_at_once_and_cancels_the_rest() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        cleaned: list[str] = []

        async def broken() -> None:
            raise ConnectionResetError

        with pytest.raises(ConnectionResetError):
            start_eagerly(broken())

        async def stuck() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                cleaned.append("finally")

        rest = start_eagerly(stuck())
        assert rest is not None
        await asyncio.sleep(0)
        rest.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rest
        return rest.cancelled(), cleaned

    assert asyncio.run(scenario()) == (True, ["finally"])
