"""An account with many open streams: the hub wakes them together, a moment after
an event, so that a task's events close together leave in one write per stream.
Every stream still receives every event, once, in commit order, promptly."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from starlette.types import Message, Send

from taskgate.api.routes.events import _account_stream, _DirectWrites
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


def test_streams_written_directly_keep_their_order_behind_a_slow_write(
    services: Services,
) -> None:
    """The API's account streams leave a sink with the hub, which then writes an
    event straight to every parked stream. A stream whose write waits for its peer
    (a slow reader) refuses the next events; its own loop takes them and sends
    them only after that write. Every stream gets every event once, in order."""
    account = add_account(services, "direct")
    slow = {0, 3, STREAMS - 1}
    base_url = "http://taskgate.test"

    async def scenario() -> tuple[list[list[str]], list[str], dict[int, int]]:
        hub = services.events
        hub.start()
        written: list[list[bytes]] = [[] for _ in range(STREAMS)]
        by_loop: dict[int, int] = dict.fromkeys(slow, 0)
        peer_reads = asyncio.Event()
        submitted: list[str] = []
        try:
            async with contextlib.AsyncExitStack() as stack:

                def sender(index: int) -> Send:
                    async def send(message: Message) -> None:
                        if index in slow:
                            await peer_reads.wait()
                        written[index].append(message["body"])

                    return send

                async def follow(index: int) -> None:
                    writes = _DirectWrites(sender(index), base_url, services.signer)
                    opened = contextlib.AsyncExitStack()
                    events = await opened.enter_async_context(
                        hub.account_events(account.id, None, writes)
                    )
                    stream = _account_stream(opened, events, writes, base_url, services.signer)
                    async for chunk in stream:
                        assert isinstance(chunk, bytes)
                        written[index].append(chunk)
                        by_loop[index] = by_loop.get(index, 0) + 1

                followers = [asyncio.create_task(follow(i)) for i in range(STREAMS)]

                async def stop_following() -> None:
                    for follower in followers:
                        follower.cancel()  # (which closes its stream)
                    await asyncio.gather(*followers, return_exceptions=True)

                stack.push_async_callback(stop_following)

                async def until(done: Callable[[], bool]) -> None:
                    while not done():
                        for follower in followers:
                            if follower.done():
                                follower.result()  # a failed stream fails the test
                        await asyncio.sleep(0.005)

                async with asyncio.timeout(10):
                    await until(lambda: hub.listening == STREAMS)
                    # One task at a time, each in its own wave.
                    for count in range(1, 5):
                        view, _created = await services.tasks.submit(
                            account.id, "wait", WorkflowSubmit(input={"seconds": 0}), None
                        )
                        submitted.append(view.task.id)
                        hub.notify()
                        await until(
                            lambda: all(
                                len(_ids(written[i])) == count  # noqa: B023 (awaited here)
                                for i in range(STREAMS)
                                if i not in slow
                            )
                        )
                    peer_reads.set()
                    await until(lambda: all(len(_ids(w)) == len(submitted) for w in written))
        finally:
            await hub.stop()
        return [_ids(w) for w in written], submitted, by_loop

    received, submitted, by_loop = asyncio.run(scenario())
    for stream in received:
        assert stream == submitted
    # The slow streams' later events went through their own loop.
    assert all(by_loop[index] >= 1 for index in slow)


def _ids(chunks: list[bytes]) -> list[str]:
    """The task ids of the events in an account stream's bytes, in order."""
    found = []
    for line in b"".join(chunks).decode().splitlines():
        if line.startswith("data: "):
            found.append(json.loads(line[6:])["data"]["id"])
    return found


def test_a_wave_overlapping_what_a_stream_has_hands_over_only_the_rest() -> None:
    """Streams written to early in a pass get a later event in the next pass; the
    others got it merged into the current wave. Each gets it once."""
    events = [_event(n) for n in range(4)]
    sub = hub_module.Subscription(None, "acct")
    sub.receive(hub_module._Wave([(1, events[0]), (2, events[1])]))
    sub.receive(hub_module._Wave([(1, events[0]), (2, events[1]), (3, events[2])]))
    sub.receive(hub_module._Wave([(3, events[2])]))
    sub.receive(hub_module._Wave([(3, events[2]), (4, events[3])]))
    assert [item[0] for item in sub.items if item is not None] == [1, 2, 3, 4]

    resumed = hub_module.Subscription(None, "acct", floor=2)  # its replay went this far
    resumed.receive(hub_module._Wave([(1, events[0]), (2, events[1]), (3, events[2])]))
    assert [item[0] for item in resumed.items if item is not None] == [3]


def _event(n: int) -> Event:
    return Event(
        id=f"evt_{n}",
        seq=n,
        task_id="task_x",
        account_id="acct",
        type="task.created",
        data={},
        created_at=0,
    )
