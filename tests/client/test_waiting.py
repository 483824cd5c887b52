"""Following tasks with ``Client``: event streams (resuming after a dropped
connection), waits that time out and resume, polling, and a server restart."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from taskgate.client import (
    Client,
    Config,
    NotFoundError,
    TaskEvent,
    TaskObject,
    WaitTimeoutError,
)
from tests.acceptance.apitools import Account
from tests.client.servers import start_on_port
from tests.client.transports import FaultyTransport
from tests.helpers import ServerProcess, free_port

pytestmark = pytest.mark.acceptance


def kinds(events: list[TaskEvent]) -> list[tuple[int, str, str]]:
    return [(event.sequence, event.type, event.data.status) for event in events]


def history(client: Client, task_id: str) -> list[TaskEvent]:
    """Every event of an ended task, read back by resuming after event 0."""
    return list(client.tasks.stream(task_id, last_event_id=0))


def test_stream_yields_snapshot_then_changes_to_the_end(client: Client) -> None:
    task = client.tasks.create("wait", {"seconds": 0.3, "steps": 3})
    snapshot, *changes = list(client.tasks.stream(task.id))
    past = history(client, task.id)
    # (The worker may coalesce progress reports, so their number is not fixed.)
    types = [event.type for event in past]
    assert types[:2] == ["task.created", "task.started"]
    assert set(types[2:-1]) <= {"task.progress"}
    assert types[-1] == "task.completed"
    assert [event.sequence for event in past] == list(range(1, len(past) + 1))
    assert (snapshot.type, snapshot.id, snapshot.terminal) == ("task.snapshot", None, False)
    assert snapshot.data.id == task.id
    # The live stream gave every change after its snapshot, and ended with the last one.
    assert kinds(changes) == kinds(past[snapshot.sequence :])
    assert [event.terminal for event in changes] == [False] * (len(changes) - 1) + [True]
    assert all(event.id is not None and event.id.startswith("evt_") for event in changes)
    # An ended task's stream is its snapshot alone; after its last event, nothing.
    last = len(past)
    assert kinds(list(client.tasks.stream(task.id))) == [(last, "task.snapshot", "completed")]
    assert list(client.tasks.stream(task.id, last_event_id=last)) == []


def test_stream_resumes_from_a_given_event(client: Client) -> None:
    task = client.tasks.create("wait", {"seconds": 0.3, "steps": 3})
    stream = client.tasks.stream(task.id)
    first = [next(stream), next(stream)]
    stream.close()
    rest = list(client.tasks.stream(task.id, last_event_id=first[-1].sequence))
    past = history(client, task.id)
    assert first[0].type == "task.snapshot"
    assert kinds(first[1:]) == kinds(past[first[0].sequence : first[1].sequence])
    assert kinds(rest) == kinds(past[first[1].sequence :])
    assert rest[-1].type == "task.completed"


def _events(request: httpx.Request) -> bool:
    return request.url.path.endswith("/events")


def test_stream_resumes_by_itself_after_a_dropped_connection(
    sdk_server: ServerProcess, account: Account
) -> None:
    transport = FaultyTransport(lambda n, _: "cut:2" if n == 0 else None, _events)
    with Client(sdk_server.base_url, account.key, transport=transport) as client:
        task = client.tasks.create("wait", {"seconds": 0.3, "steps": 3})
        snapshot, *changes = list(client.tasks.stream(task.id))
        past = history(client, task.id)
    assert snapshot.type == "task.snapshot"
    assert kinds(changes) == kinds(past[snapshot.sequence :])
    opened = [request for request in transport.sent if _events(request)]
    assert [request.headers.get("last-event-id") for request in opened] == [
        None,
        str(changes[0].sequence),
        "0",
    ]


def test_stream_of_an_unknown_task(client: Client) -> None:
    with pytest.raises(NotFoundError) as error:
        list(client.tasks.stream("task_01J0000000000000000000000Z"))
    assert error.value.code == "task_not_found"


def test_wait_times_out_with_the_task_id_and_resumes(client: Client) -> None:
    task = client.tasks.create("wait", {"seconds": 1.0})
    with pytest.raises(WaitTimeoutError) as error:
        client.tasks.wait(task.id, timeout=0.2)
    assert error.value.task_id == task.id
    assert error.value.timeout == 0.2
    assert error.value.task is not None
    assert error.value.task.status in ("queued", "running")
    done = client.tasks.wait(error.value.task_id, timeout=20)
    assert (done.id, done.status) == (task.id, "completed")


def test_wait_falls_back_to_polling_when_the_stream_keeps_failing(
    sdk_server: ServerProcess, account: Account
) -> None:
    transport = FaultyTransport(lambda n, _: "503", _events)
    with Client(sdk_server.base_url, account.key, transport=transport) as client:
        task = client.tasks.create("wait", {"seconds": 0.3})
        done = client.tasks.wait(task.id, timeout=20)
    assert (done.id, done.status) == (task.id, "completed")
    assert transport.matched == Config().stream_failures_before_polling
    path = f"/v1/tasks/{task.id}"
    assert any(r.method == "GET" and r.url.path == path for r in transport.sent)


def test_wait_survives_a_server_restart(data_dir: Path) -> None:
    """The wait starts against a server without workers; that server stops while the
    wait reads the task's stream, and one with workers starts on the same port and
    data dir: the wait reconnects (polling through the outage) and sees the task end."""
    port = free_port()
    first = start_on_port(data_dir, port, "--no-workers")
    assert first.api_key is not None
    transport = FaultyTransport(lambda n, _: None, _events)
    client = Client(first.base_url, first.api_key, transport=transport)
    results: list[TaskObject | BaseException] = []
    try:
        task = client.tasks.create("wait", {"seconds": 0.1})

        def waiting() -> None:
            try:
                results.append(client.tasks.wait(task.id, timeout=40))
            except BaseException as exc:
                results.append(exc)

        thread = threading.Thread(target=waiting, daemon=True)
        thread.start()
        assert transport.seen.wait(10), "the wait never opened the stream"
        assert first.stop() == 0
        assert results == []
        second = start_on_port(data_dir, port)
        try:
            thread.join(30)
            assert not thread.is_alive()
        finally:
            second.stop()
    finally:
        first.stop()
        client.close()
    assert len(results) == 1
    done = results[0]
    assert isinstance(done, TaskObject), done
    assert (done.id, done.status) == (task.id, "completed")


def test_wait_reports_each_state_it_learns_of(client: Client) -> None:
    seen: list[TaskObject] = []
    task = client.tasks.create("wait", {"seconds": 0.3, "steps": 3})
    done = client.tasks.wait(task.id, timeout=20, on_update=seen.append)
    assert all(update.id == task.id for update in seen)
    assert seen[-1].model_dump(exclude={"links"}) == done.model_dump(exclude={"links"})
    assert {update.status for update in seen} >= {"running", "completed"}
    percents = [update.progress.percent for update in seen]
    assert percents == sorted(percents) and percents[-1] == 100
