"""Waiting with a deadline without losing a cancellation, and starting a
coroutine in the caller's own step.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result when it completes
in the same loop iteration as a cancellation of the waiting task, and the
cancellation is lost (python/cpython#86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``). A loop that must stop when cancelled then runs forever, so
every bounded wait here goes through ``asyncio.timeout``, which keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` passed; whether it is set."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def start_eagerly(awaitable: Awaitable[None]) -> asyncio.Future[None] | None:
    """Run ``coro`` now, in the caller's step, up to its first suspension.

    None when it finished without suspending (its exception, if any, is raised
    here); otherwise a task that runs the rest from where it stopped. Python 3.12's
    eager tasks do this for a whole task; here it serves a single send: writing to
    a socket whose buffer has room completes at once, without a task and a loop
    turn per write, and only a write that must wait for the peer costs a task.
    An awaitable that is not a coroutine is simply scheduled.
    """
    if not isinstance(awaitable, Coroutine):
        return asyncio.ensure_future(awaitable)
    coro = awaitable
    try:
        suspended_on = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, suspended_on))


async def _finish(coro: Coroutine[Any, Any, None], suspended_on: Any) -> None:
    await _Resumed(coro, suspended_on)


class _Resumed:
    """Awaits a coroutine that already ran up to ``suspended_on``: hands that to
    the task driving it, then relays what the task sends or throws in (the
    future's wake-up, a cancellation) and what the coroutine yields next, as
    ``await coro`` would have from the start."""

    def __init__(self, coro: Coroutine[Any, Any, None], suspended_on: Any) -> None:
        self._coro = coro
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, yielded = self._coro, self._suspended_on
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    yielded = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration:
                    return
