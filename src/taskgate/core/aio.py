"""Waiting with a deadline, without losing a cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result when it completes
in the same loop iteration as a cancellation of the waiting task, and the
cancellation is lost (python/cpython#86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``). A loop that must stop when cancelled then runs forever, so
every bounded wait here goes through ``asyncio.timeout``, which keeps it.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` passed; whether it is set."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
