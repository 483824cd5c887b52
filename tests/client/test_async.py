"""``AsyncClient``: the same plans as ``Client`` run by the asyncio driver; these
check the places where the surface differs (awaitables, async iterators)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from taskgate.client import (
    AsyncClient,
    NotFoundError,
    TaskEvent,
    TaskFailedError,
    TaskObject,
    WaitTimeoutError,
)
from tests.acceptance.apitools import TASK_ID, Account
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance


def test_async_create_wait_stream_list_and_run(sdk_server: ServerProcess, account: Account) -> None:
    async def scenario() -> None:
        async with AsyncClient(sdk_server.base_url, account.key) as client:
            assert [w.name for w in await client.workflows.list()][-1] == "wait"
            task = await client.tasks.create("wait", {"seconds": 0.2, "steps": 2})
            events: list[TaskEvent] = [event async for event in client.tasks.stream(task.id)]
            assert events[0].type == "task.snapshot"
            assert events[-1].type == "task.completed"
            sequences = [event.sequence for event in events]
            assert sequences == list(range(sequences[0], sequences[0] + len(events)))
            done = await client.tasks.wait(task.id, timeout=20)
            assert (done.id, done.status) == (task.id, "completed")

            run = await client.tasks.run("wait", {"fail": True}, timeout=20)
            assert TASK_ID.match(run.task_id)
            with pytest.raises(TaskFailedError) as failed:
                await run.wait()
            assert failed.value.task.id == run.task_id

            slow = await client.tasks.create("wait", {"seconds": 0.5})
            with pytest.raises(WaitTimeoutError) as late:
                await client.tasks.wait(slow.id, timeout=0.1)
            assert late.value.task_id == slow.id
            resumed = await client.tasks.wait(late.value.task_id, timeout=20)
            assert resumed.status == "completed"

            listed: list[TaskObject] = [t async for t in client.tasks.list(limit=1)]
            assert [t.id for t in listed] == [slow.id, run.task_id, task.id]
            usage = await client.usage.get()
            assert usage.account_id == account.id
            with pytest.raises(NotFoundError):
                await client.tasks.get("task_01J0000000000000000000000Z")

    asyncio.run(scenario())


def test_async_stream_resumes_after_breaking_off(
    sdk_server: ServerProcess, account: Account
) -> None:
    async def scenario() -> None:
        async with AsyncClient(sdk_server.base_url, account.key) as client:
            task = await client.tasks.create("wait", {"seconds": 0.2, "steps": 2})
            async with contextlib.aclosing(client.tasks.stream(task.id)) as stream:
                first = await anext(stream)
            rest = [e async for e in client.tasks.stream(task.id, last_event_id=first.sequence)]
            full = [e async for e in client.tasks.stream(task.id, last_event_id=0)]
            assert [e.sequence for e in rest] == [e.sequence for e in full[first.sequence :]]
            assert rest[-1].type == "task.completed"

    asyncio.run(scenario())
