"""An account with many open streams: the hub wakes them together, a moment after
an event, so that a task's events close together leave in one write per stream.
Every stream still receives every event, once, in commit order, promptly."""

from __future__ import annotations

import asyncio
import contextlib

from taskgate.composition import Services
from taskgate.core.models import Event
from taskgate.payloads import WorkflowSubmit
from taskgate.services import events as hub_module
from tests.integration.taskrows import add_account

# More than the hub wakes one by one.
STREAMS = hub_module._WAKE_AT_ONCE + 6


def test_many_streams_of_one_account_each_get_every_event_in_order(services: Services) -> None:
    account = add_account(services, "fan-out")

    async def scenario() -> tuple[list[list[Event]], list[str]]:
        hub = services.events
        hub.start()
        received: list[list[Event]] = [[] for _ in range(STREAMS)]
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = [
                    await stack.enter_async_context(hub.account_events(account.id, None))
                    for _ in range(STREAMS)
                ]

                async def follow(index: int, events: object, wanted: int) -> None:
                    async for batch in events:  # type: ignore[attr-defined]
                        received[index].extend(batch)
                        if len(received[index]) >= wanted:
                            return

                # Every stream waits for its first event before any is written.
                followers = [
                    asyncio.create_task(follow(i, stream, 5)) for i, stream in enumerate(streams)
                ]
                await asyncio.sleep(0)
                submitted = []
                for _ in range(5):
                    view, _created = await services.tasks.submit(
                        account.id, "wait", WorkflowSubmit(input={"seconds": 0}), None
                    )
                    submitted.append(view.task.id)
                    hub.notify()
                async with asyncio.timeout(10):
                    await asyncio.gather(*followers)
        finally:
            await hub.stop()
        return received, submitted

    received, submitted = asyncio.run(scenario())
    first = received[0]
    # The five task.created events, in the order they were committed, and nothing twice.
    assert [event.task_id for event in first] == submitted
    assert {event.type for event in first} == {"task.created"}
    assert len({event.id for event in first}) == len(first)
    for other in received[1:]:
        assert [event.id for event in other] == [event.id for event in first]
