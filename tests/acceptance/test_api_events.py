"""Server-sent events over real HTTP: a task's stream (snapshot, changes, resuming,
stream tokens), the account's stream, keep-alive comments, and ``Prefer: wait=N``
on submit.

The streams are read with httpx and parsed here, so what is checked is the wire
format itself: blocks separated by blank lines, ``id:``/``event:``/``data:`` fields,
``:`` comments.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.acceptance.apitools import (
    TERMINAL,
    Account,
    assert_error,
    cancel_quietly,
    module_server,
    no_token,
    parse_time,
    quick_account,
    sql_many,
    stable,
    submit,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, postgres_url

pytestmark = pytest.mark.acceptance

SECRET = "events-test-secret-key-0123456789abcdef"
KEEPALIVE = 0.2
EVENT_ID = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")
UNKNOWN_TASK = "task_01J0000000000000000000000Z"
TERMINAL_TYPES = frozenset({"task.completed", "task.failed", "task.cancelled"})
CHANGE_TYPES = frozenset(
    {
        "task.created",
        "task.started",
        "task.progress",
        "task.cancel_requested",
        "task.requeued",
        *TERMINAL_TYPES,
    }
)
# Every read of a stream gives up after this long without a byte (keep-alive
# comments arrive every KEEPALIVE seconds); each stream also has an overall deadline.
READ_TIMEOUT = httpx.Timeout(5.0)


# -- reading event streams ----------------------------------------------------


@dataclass(frozen=True)
class Sse:
    """One server-sent event as it came over the wire."""

    id: str | None
    event: str | None
    data: str

    @property
    def payload(self) -> dict[str, Any]:
        value = json.loads(self.data)
        assert isinstance(value, dict), self.data
        return value

    @property
    def task(self) -> dict[str, Any]:
        task = self.payload["data"]
        assert isinstance(task, dict) and task["object"] == "task", task
        return task


class SseReader:
    """Parses an ``text/event-stream`` response line by line; fails once its deadline
    passes instead of waiting for a stream that does not end."""

    def __init__(self, response: httpx.Response, timeout: float) -> None:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        self.response = response
        self.deadline = time.monotonic() + timeout
        self.comments: list[str] = []
        self.closed = False
        self._lines = response.iter_lines()

    def next_item(self) -> Sse | str | None:
        """The next event, or comment (a ``str``); None once the server closed the stream."""
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in self._lines:
            if time.monotonic() > self.deadline:
                raise AssertionError(f"the stream was still open at its deadline: {fields}")
            if line == "":
                if fields or data:
                    return Sse(fields.get("id"), fields.get("event"), "\n".join(data))
                continue
            if line.startswith(":"):
                comment = line[1:].removeprefix(" ")
                self.comments.append(comment)
                if not fields and not data:
                    return comment
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            assert name in ("id", "event", "data"), f"unexpected field {line!r}"
            if name == "data":
                data.append(value)
            else:
                assert name not in fields, f"{name} twice in one event"
                fields[name] = value
        self.closed = True
        assert not fields and not data, f"the stream ended inside an event: {fields} {data}"
        return None

    def next_event(self) -> Sse | None:
        """The next event (comments are skipped); None once the stream closed."""
        while True:
            item = self.next_item()
            if not isinstance(item, str):
                return item

    def event(self) -> Sse:
        """The next event; the stream must not have closed."""
        found = self.next_event()
        assert found is not None, "the stream closed"
        return found

    def events(self, count: int) -> list[Sse]:
        return [self.event() for _ in range(count)]

    def until(self, done: Callable[[Sse], bool]) -> list[Sse]:
        """Events up to and including the first one ``done`` accepts."""
        found: list[Sse] = []
        while not found or not done(found[-1]):
            found.append(self.event())
        return found

    def rest(self) -> list[Sse]:
        """Every event until the server closes the stream."""
        found: list[Sse] = []
        while (event := self.next_event()) is not None:
            found.append(event)
        return found


@contextlib.contextmanager
def open_stream(
    http: httpx.Client, url: str, *, timeout: float = 15, **kwargs: Any
) -> Iterator[SseReader]:
    """An event stream, read with a deadline; leaving the block disconnects."""
    with http.stream("GET", url, timeout=READ_TIMEOUT, **kwargs) as response:
        yield SseReader(response, timeout)


def fetch(
    http: httpx.Client, url: str, *, timeout: float = 15, **kwargs: Any
) -> tuple[httpx.Response, list[Sse]]:
    """A request to an event route, read to its end: the response, and its events if
    it is a stream (which must close before ``timeout``)."""
    with http.stream("GET", url, timeout=READ_TIMEOUT, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response, SseReader(response, timeout).rest()
        response.read()
        return response, []


def history(http: httpx.Client, task_id: str) -> list[Sse]:
    """Every stored event of a finished task (its stream resumed from 0)."""
    response, events = fetch(http, f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "0"})
    assert response.status_code == 200, response.text
    assert [e.id for e in events] == [str(n) for n in range(1, len(events) + 1)]
    return events


def wire(events: list[Sse]) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    return [(e.id, e.event, e.payload) for e in events]


def types(events: list[Sse]) -> list[str | None]:
    return [e.event for e in events]


def check_change(event: Sse, task_id: str) -> None:
    """A change event of a task's stream: its ``event:`` the payload's type, its
    ``id:`` a sequence number, the payload ``{id: evt_…, type, created_at, data}``."""
    payload = event.payload
    assert set(payload) == {"id", "type", "created_at", "data"}, payload
    assert event.event == payload["type"] and payload["type"] in CHANGE_TYPES, event
    assert EVENT_ID.match(payload["id"]), payload
    assert event.id is not None and event.id.isdecimal(), event
    parse_time(payload["created_at"])
    assert event.task["id"] == task_id, event.task


def check_seq(events: list[Sse], first: int) -> None:
    """Sequence ids ``first, first+1, …`` with no gap and no repeat."""
    assert [e.id for e in events] == [str(n) for n in range(first, first + len(events))], [
        e.id for e in events
    ]


def get_task(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def token_of(task: dict[str, Any]) -> str:
    url = httpx.URL(task["links"]["events"])
    token = url.params.get("token")
    assert isinstance(token, str) and token, task["links"]
    return token


def flip(token: str, index: int) -> str:
    """The token with one character changed. (Not the last of a base64 part: its
    low bits are padding, and some changes there decode to the same bytes.)"""
    assert token[index] != "." and token[index + 1] != ".", (token, index)
    return token[:index] + ("B" if token[index] == "A" else "A") + token[index + 1 :]


def forge_token(account_id: str, task_id: str, *, secret: str = SECRET, age: float = 0) -> str:
    """A stream token signed like the server signs them, made ``age`` seconds ago."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    serializer = URLSafeTimedSerializer(secret, salt="taskgate.stream", signer=Backdated)
    return str(serializer.dumps([account_id, task_id]))


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory,
        backend,
        env={
            "TASKGATE_SSE_KEEPALIVE_SECONDS": str(KEEPALIVE),
            "TASKGATE_SECRET_KEY": SECRET,
            "TASKGATE_WORKERS": "6",
        },
    )


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "events", concurrency=6)


@pytest.fixture(scope="module")
def stranger(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "stranger")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


@pytest.fixture
def anonymous(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def done(srv: ServerProcess, acct: Account) -> dict[str, Any]:
    """A completed task (created, started, progress, completed: four events or more)."""
    with srv.client(acct.key) as http:
        task = submit(http, input={"seconds": 0.6, "steps": 3})
        return wait_status(http, task["id"], ["completed"])


# -- a task's stream ---------------------------------------------------------


def test_the_full_stream_of_a_task(http: httpx.Client) -> None:
    """Snapshot first, then each change with the next sequence id, closing after
    task.completed; the last event's task is the task as GET shows it."""
    task = submit(http, input={"seconds": 1, "steps": 3})
    with open_stream(http, f"/v1/tasks/{task['id']}/events") as stream:
        assert stream.response.headers["cache-control"] == "no-store"
        snapshot = stream.event()
        changes = stream.rest()
    assert snapshot.event == "task.snapshot"
    payload = snapshot.payload
    assert set(payload) == {"id", "type", "created_at", "data"}, payload
    assert payload["id"] is None and payload["type"] == "task.snapshot"
    parse_time(payload["created_at"])
    assert snapshot.task["id"] == task["id"]
    # The snapshot's id is the latest event it reflects: 1 (created) while queued.
    if snapshot.task["status"] == "queued":
        assert snapshot.id == "1"
    else:
        assert snapshot.task["status"] == "running" and snapshot.id is not None
        assert int(snapshot.id) >= 2
    assert snapshot.id is not None
    first = int(snapshot.id) + 1
    check_seq(changes, first)
    for event in changes:
        check_change(event, task["id"])
    assert changes[-1].event == "task.completed"
    assert not TERMINAL_TYPES & set(types(changes[:-1])), types(changes)
    assert ("task.started" in types(changes)) == (snapshot.task["status"] == "queued")
    # Progress only moves forward, through the handler's own steps (33⅓, 66⅔, 100).
    percents = [e.task["progress"]["percent"] for e in changes if e.event == "task.progress"]
    assert percents == sorted(set(percents)), percents
    assert set(percents) <= {100 / 3, 200 / 3, 100.0}, percents
    final = changes[-1].task
    assert final["status"] == "completed"
    assert final["progress"] == {"percent": 100.0, "stage": "waiting", "message": "step 3 of 3"}
    assert final["output"] == [{"waited_seconds": 1.0, "steps": 3}] and final["error"] is None
    got = get_task(http, task["id"])
    assert got["links"]["events"].startswith(f"{final['links']['events']}?token=")
    assert no_token(got) == final
    assert changes[-1].payload["created_at"] == got["completed_at"]
    # The snapshot is the task as its event ``id:`` left it, and what the stream sent
    # after it is exactly what is stored after it.
    stored = history(http, task["id"])
    assert stable(snapshot.task) == stable(stored[first - 2].task)
    assert wire(stored[first - 1 :]) == wire(changes)


def test_the_stream_of_a_finished_task_is_its_snapshot(
    http: httpx.Client, done: dict[str, Any]
) -> None:
    """A terminal task's stream is one snapshot (id: its last seq), then it closes."""
    stored = history(http, done["id"])
    response, events = fetch(http, f"/v1/tasks/{done['id']}/events")
    assert response.status_code == 200
    assert [(e.id, e.event) for e in events] == [(stored[-1].id, "task.snapshot")]
    assert events[0].task == no_token(get_task(http, done["id"]))


def test_the_stored_history(http: httpx.Client, done: dict[str, Any]) -> None:
    """Resumed from 0, a finished task's stream is every change, created to completed."""
    events = history(http, done["id"])
    for event in events:
        check_change(event, done["id"])
    kinds = types(events)
    assert kinds[:2] == ["task.created", "task.started"], kinds
    assert kinds[-1] == "task.completed", kinds
    assert set(kinds[2:-1]) <= {"task.progress"}, kinds
    assert len({e.payload["id"] for e in events}) == len(events)
    assert events[0].task["status"] == "queued" and events[1].task["status"] == "running"
    assert events[-1].task == no_token(get_task(http, done["id"]))


@pytest.mark.parametrize("form", ["header", "query"])
def test_resume_from_every_event_id(http: httpx.Client, done: dict[str, Any], form: str) -> None:
    """From each id 0..last: exactly the events after it; at the last, a 204."""
    stored = history(http, done["id"])
    assert len(stored) >= 4, types(stored)
    url = f"/v1/tasks/{done['id']}/events"
    for n in range(len(stored) + 1):
        if form == "header":
            response, events = fetch(http, url, headers={"Last-Event-ID": str(n)})
        else:
            response, events = fetch(http, url, params={"last_event_id": str(n)})
        if n == len(stored):
            assert response.status_code == 204, response.text
            assert response.content == b""
            assert "content-type" not in response.headers
        else:
            assert response.status_code == 200, (n, response.text)
            assert wire(events) == wire(stored[n:]), n


def test_resume_while_running(http: httpx.Client) -> None:
    """Disconnect mid-task and resume from the last id seen: the rest, no gap, no
    repeat, closing after task.completed (keep-alive comments flow meanwhile)."""
    task = submit(http, input={"seconds": 2, "steps": 4})
    with open_stream(http, f"/v1/tasks/{task['id']}/events") as stream:
        snapshot = stream.event()
        assert snapshot.event == "task.snapshot"
        seen = stream.until(lambda e: e.event == "task.progress")
    assert snapshot.id is not None
    check_seq(seen, int(snapshot.id) + 1)
    assert get_task(http, task["id"])["status"] == "running"
    last = seen[-1].id
    assert last is not None
    with open_stream(http, f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": last}) as s:
        first = s.event()  # no snapshot when resuming
        rest = [first, *s.rest()]
        comments = s.comments
    assert first.event != "task.snapshot"
    check_seq(rest, int(last) + 1)
    assert rest[-1].event == "task.completed"
    assert "task.progress" in types(rest), types(rest)
    assert comments and all(c.startswith("ping") for c in comments), comments
    assert wire(history(http, task["id"])[int(snapshot.id) :]) == wire([*seen, *rest])


def test_resume_with_the_query_while_running(http: httpx.Client) -> None:
    """``?last_event_id=N`` resumes like the header, also on a running task."""
    task = submit(http, input={"seconds": 1, "steps": 2})
    wait_status(http, task["id"], ["running"])
    with open_stream(
        http, f"/v1/tasks/{task['id']}/events", params={"last_event_id": "1"}
    ) as stream:
        events = stream.rest()
    check_seq(events, 2)
    assert types(events)[0] == "task.started" and types(events)[-1] == "task.completed"
    assert wire(history(http, task["id"])[1:]) == wire(events)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x1", "1e2", "evt_x", "1 2"])
@pytest.mark.parametrize("form", ["header", "query"])
def test_resume_from_a_non_number(
    http: httpx.Client, done: dict[str, Any], value: str, form: str
) -> None:
    kwargs: dict[str, Any] = (
        {"headers": {"Last-Event-ID": value}}
        if form == "header"
        else {"params": {"last_event_id": value}}
    )
    response, _ = fetch(http, f"/v1/tasks/{done['id']}/events", **kwargs)
    assert_error(response, 400, "invalid_param", "last_event_id")


@pytest.mark.parametrize("form", ["header", "query"])
def test_resume_past_the_latest_event(http: httpx.Client, done: dict[str, Any], form: str) -> None:
    """An id after the task's latest event is a 400, on a finished and a running task."""
    latest = len(history(http, done["id"]))
    running = submit(http, input={"seconds": 30})
    try:
        for task_id, after in ((done["id"], latest + 1), (done["id"], 10**30), (running["id"], 99)):
            kwargs: dict[str, Any] = (
                {"headers": {"Last-Event-ID": str(after)}}
                if form == "header"
                else {"params": {"last_event_id": str(after)}}
            )
            response, _ = fetch(http, f"/v1/tasks/{task_id}/events", **kwargs)
            assert_error(response, 400, "invalid_param", "last_event_id")
    finally:
        cancel_quietly(http, [running["id"]])


@pytest.mark.parametrize("form", ["header", "query"])
def test_resume_from_a_superscript_digit(
    http: httpx.Client, done: dict[str, Any], form: str
) -> None:
    kwargs: dict[str, Any] = (
        {"headers": {"Last-Event-ID": b"\xb2"}}
        if form == "header"
        else {"params": {"last_event_id": "\u00b2"}}
    )
    response, _ = fetch(http, f"/v1/tasks/{done['id']}/events", **kwargs)
    assert_error(response, 400, "invalid_param", "last_event_id")


def test_progress_is_coalesced(http: httpx.Client) -> None:
    """Many quick progress reports: at most two stored a second, the last one kept."""
    task = submit(http, input={"seconds": 1.2, "steps": 60})
    wait_status(http, task["id"], ["completed"])
    events = history(http, task["id"])
    progress = [e for e in events if e.event == "task.progress"]
    assert 1 <= len(progress) <= 3, types(events)
    times = [parse_time(e.payload["created_at"]) for e in progress]
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    # 0.5 s apart, less the few milliseconds between a worker's tick and its write.
    assert all(gap >= 0.4 for gap in gaps), gaps
    steps = [int(e.task["progress"]["message"].split()[1]) for e in progress]
    assert steps == sorted(set(steps)), steps
    assert events[-1].event == "task.completed"
    assert events[-1].task["progress"]["message"] == "step 60 of 60"


def test_requeued_does_not_end_the_stream(http: httpx.Client) -> None:
    """A retried task's stream shows task.requeued and goes on to the terminal event
    (read from event 1 on, since the first attempt fails at once)."""
    task = submit(http, input={"seconds": 0, "fail_attempts": 1})
    url = f"/v1/tasks/{task['id']}/events"
    with open_stream(http, url, headers={"Last-Event-ID": "1"}) as stream:
        changes = stream.rest()
    check_seq(changes, 2)
    for event in changes:
        check_change(event, task["id"])
    kinds = types(changes)
    assert kinds[:3] == ["task.started", "task.requeued", "task.started"], kinds
    assert kinds[-1] == "task.completed" and set(kinds[3:-1]) <= {"task.progress"}, kinds
    assert wire(history(http, task["id"])[1:]) == wire(changes)
    requeued = changes[1].task
    assert requeued["status"] == "queued" and requeued["attempts"] == 1
    assert requeued["error"]["code"] == "wait_failed"
    assert changes[-1].task["attempts"] == 2


def test_a_failed_task_ends_its_stream(http: httpx.Client) -> None:
    task = submit(http, input={"seconds": 0.3, "fail": True})
    with open_stream(http, f"/v1/tasks/{task['id']}/events") as stream:
        snapshot = stream.event()
        changes = stream.rest()
    assert snapshot.event == "task.snapshot" and snapshot.id is not None
    check_seq(changes, int(snapshot.id) + 1)
    assert changes[-1].event == "task.failed"
    assert not TERMINAL_TYPES & set(types(changes[:-1])), types(changes)
    failed = changes[-1].task
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "wait_failed"
    assert no_token(get_task(http, task["id"])) == failed


def test_cancelling_a_running_task_ends_its_stream(http: httpx.Client) -> None:
    task = submit(http, input={"seconds": 30})
    with open_stream(http, f"/v1/tasks/{task['id']}/events") as stream:
        snapshot = stream.event()
        if snapshot.task["status"] == "queued":
            assert types(stream.until(lambda e: True)) == ["task.started"]
        response = http.post(f"/v1/tasks/{task['id']}/cancel")
        assert response.status_code == 202, response.text
        rest = stream.rest()
    assert types(rest) == ["task.cancel_requested", "task.cancelled"]
    assert rest[0].task["status"] == "running" and rest[0].task["cancel_requested_at"]
    assert rest[1].task["status"] == "cancelled"
    assert no_token(get_task(http, task["id"])) == rest[1].task
    stored = history(http, task["id"])
    assert wire(stored[-2:]) == wire(rest)


def test_cancelling_a_queued_task_ends_its_stream(srv: ServerProcess) -> None:
    single = quick_account(srv.data_dir, "single", concurrency=1)
    with srv.client(single.key) as http:
        blocker = submit(http, input={"seconds": 30})
        queued = submit(http, input={"seconds": 0})
        try:
            with open_stream(http, f"/v1/tasks/{queued['id']}/events") as stream:
                snapshot = stream.event()
                assert (snapshot.id, snapshot.event) == ("1", "task.snapshot")
                assert snapshot.task["status"] == "queued"
                response = http.post(f"/v1/tasks/{queued['id']}/cancel")
                assert response.status_code == 200, response.text
                rest = stream.rest()
            assert [(e.id, e.event) for e in rest] == [("2", "task.cancelled")]
            assert rest[0].task["status"] == "cancelled"
        finally:
            cancel_quietly(http, [blocker["id"]])


# -- who may read a task's stream ------------------------------------------------


def test_no_auth_is_401(anonymous: httpx.Client, done: dict[str, Any]) -> None:
    response, _ = fetch(anonymous, f"/v1/tasks/{done['id']}/events")
    assert_error(response, 401, "invalid_api_key")
    response, _ = fetch(
        anonymous, f"/v1/tasks/{done['id']}/events", headers={"Authorization": "Bearer tg_live_x"}
    )
    assert_error(response, 401, "invalid_api_key")


def test_another_accounts_task_is_404(
    srv: ServerProcess, stranger: Account, done: dict[str, Any]
) -> None:
    with srv.client(stranger.key) as other:
        for resume in (None, "0", "99"):
            headers = {"Last-Event-ID": resume} if resume is not None else {}
            response, _ = fetch(other, f"/v1/tasks/{done['id']}/events", headers=headers)
            assert_error(response, 404, "task_not_found")
        response, _ = fetch(other, f"/v1/tasks/{UNKNOWN_TASK}/events")
        assert_error(response, 404, "task_not_found")


def test_the_stream_token_needs_no_api_key(
    http: httpx.Client, anonymous: httpx.Client, done: dict[str, Any]
) -> None:
    """``links.events`` as given by GET opens the stream without Authorization, and
    resumes with Last-Event-ID."""
    got = get_task(http, done["id"])
    url = got["links"]["events"]
    response, events = fetch(anonymous, url)
    assert response.status_code == 200
    assert types(events) == ["task.snapshot"]
    assert events[0].task == no_token(got)
    response, events = fetch(anonymous, url, headers={"Last-Event-ID": "1"})
    assert wire(events) == wire(history(http, done["id"])[1:])


def test_the_stream_token_of_a_running_task(http: httpx.Client, anonymous: httpx.Client) -> None:
    """The token from the submit response follows the task to its end."""
    task = submit(http, input={"seconds": 0.5})
    response, events = fetch(anonymous, task["links"]["events"])
    assert response.status_code == 200
    assert events[0].event == "task.snapshot" and events[-1].event == "task.completed"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: flip(t, t.rindex(".") + 1), id="signature"),
        pytest.param(lambda t: flip(t, 0), id="payload"),
        pytest.param(lambda t: flip(t, t.index(".") + 1), id="timestamp"),
        pytest.param(lambda t: t.split(".")[0], id="unsigned"),
        pytest.param(lambda t: "x", id="garbage"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_a_tampered_token_is_401(
    http: httpx.Client,
    anonymous: httpx.Client,
    done: dict[str, Any],
    tamper: Callable[[str], str],
) -> None:
    token = token_of(get_task(http, done["id"]))
    response, _ = fetch(
        anonymous, f"/v1/tasks/{done['id']}/events", params={"token": tamper(token)}
    )
    assert_error(response, 401, "invalid_token")


def test_forged_and_expired_tokens(
    anonymous: httpx.Client, acct: Account, done: dict[str, Any]
) -> None:
    """A token signed with the server's key works (the forging is right); one from
    16 minutes ago has expired; one signed with another key is refused."""
    url = f"/v1/tasks/{done['id']}/events"
    fresh = forge_token(acct.id, done["id"], age=60)
    response, events = fetch(anonymous, url, params={"token": fresh})
    assert response.status_code == 200 and types(events) == ["task.snapshot"]
    old = forge_token(acct.id, done["id"], age=16 * 60)
    assert_error(fetch(anonymous, url, params={"token": old})[0], 401, "token_expired")
    wrong = forge_token(acct.id, done["id"], secret="another-secret")
    assert_error(fetch(anonymous, url, params={"token": wrong})[0], 401, "invalid_token")


def test_a_token_opens_only_its_own_task(
    srv: ServerProcess,
    http: httpx.Client,
    anonymous: httpx.Client,
    stranger: Account,
    done: dict[str, Any],
) -> None:
    """Task A's token on task B's URL is a 401, whoever asks; with another account's
    key alongside, the token still opens task A and only task A."""
    other_done = submit(http, input={"seconds": 0})
    other_done = wait_status(http, other_done["id"], ["completed"])
    token = token_of(get_task(http, done["id"]))
    with srv.client(stranger.key) as stranger_http:
        stranger_task = submit(stranger_http, input={"seconds": 0})
        for client in (anonymous, http, stranger_http):
            for task_id in (other_done["id"], stranger_task["id"], UNKNOWN_TASK):
                response, _ = fetch(client, f"/v1/tasks/{task_id}/events", params={"token": token})
                assert_error(response, 401, "invalid_token")
        response, events = fetch(
            stranger_http, f"/v1/tasks/{done['id']}/events", params={"token": token}
        )
        assert response.status_code == 200
        assert types(events) == ["task.snapshot"] and events[0].task["id"] == done["id"]


def test_a_token_naming_another_account_finds_nothing(
    anonymous: httpx.Client, stranger: Account, done: dict[str, Any]
) -> None:
    """A validly signed token for (another account, this task) is a 404."""
    token = forge_token(stranger.id, done["id"])
    response, _ = fetch(anonymous, f"/v1/tasks/{done['id']}/events", params={"token": token})
    assert_error(response, 404, "task_not_found")


# -- keep-alive ------------------------------------------------------------------


def test_keepalive_comments_on_an_idle_stream(srv: ServerProcess) -> None:
    quiet = quick_account(srv.data_dir, "quiet")
    with srv.client(quiet.key) as http, open_stream(http, "/v1/events", timeout=5) as stream:
        started = time.monotonic()
        items = [stream.next_item() for _ in range(4)]
        elapsed = time.monotonic() - started
    assert all(isinstance(item, str) and item.startswith("ping") for item in items), items
    # Four pings, one every 0.2 s (so not sent back to back).
    assert elapsed >= 3 * KEEPALIVE, elapsed


# -- the account's stream --------------------------------------------------------


def test_the_account_stream(srv: ServerProcess, stranger: Account) -> None:
    """Every event of the account's tasks submitted after connecting, with evt_ ids,
    and resuming after an evt_ id gives exactly the later events."""
    owner = quick_account(srv.data_dir, "stream")
    with srv.client(owner.key) as http, srv.client(stranger.key) as other:
        with open_stream(http, "/v1/events") as stream:
            first = submit(http, input={"seconds": 0.3, "steps": 2})
            second = submit(http, input={"seconds": 0, "fail": True})
            seen: list[Sse] = []
            while {e.task["id"] for e in seen if e.event in TERMINAL_TYPES} != {
                first["id"],
                second["id"],
            }:
                seen.append(stream.event())
        for event in seen:
            assert event.id == event.payload["id"] and EVENT_ID.match(event.payload["id"]), event
            assert event.event == event.payload["type"], event
        assert {e.task["id"] for e in seen} == {first["id"], second["id"]}
        assert seen[0].payload["type"] == "task.created" and seen[0].task["id"] == first["id"]
        for task in (first, second):
            own = [e for e in seen if e.task["id"] == task["id"]]
            assert [e.payload for e in own] == [e.payload for e in history(http, task["id"])]

        # Resume after a few of them: exactly what followed, then live events (a task
        # of another account, submitted just before, is not among them).
        expected = list(seen)
        for n in (len(seen) - 1, len(seen) // 2, 0):
            resume = expected[n].id
            assert resume is not None
            with open_stream(http, "/v1/events", headers={"Last-Event-ID": resume}) as resumed:
                replayed = resumed.events(len(expected) - n - 1)
                submit(other, input={"seconds": 0})
                marker = submit(http, input={"seconds": 0})
                after = resumed.until(lambda e: e.event in TERMINAL_TYPES)
            assert wire(replayed) == wire(expected[n + 1 :]), n
            assert [e.payload for e in after] == [e.payload for e in history(http, marker["id"])]
            expected += after
        with open_stream(http, "/v1/events", params={"last_event_id": seen[0].id}) as resumed:
            assert wire(resumed.events(len(expected) - 1)) == wire(expected[1:])


@pytest.mark.parametrize("form", ["header", "query"])
def test_the_account_stream_refuses_unknown_ids(
    http: httpx.Client, srv: ServerProcess, stranger: Account, form: str
) -> None:
    with srv.client(stranger.key) as other:
        foreign_task = submit(other, input={"seconds": 0})
        wait_status(other, foreign_task["id"], ["completed"])
        foreign = history(other, foreign_task["id"])
    for value in ("12", "task_01J0000000000000000000000Z", "evt_01J0000000000000000000000Z"):
        kwargs: dict[str, Any] = (
            {"headers": {"Last-Event-ID": value}}
            if form == "header"
            else {"params": {"last_event_id": value}}
        )
        response, _ = fetch(http, "/v1/events", **kwargs)
        assert_error(response, 400, "invalid_param", "last_event_id")
    # Another account's event id is unknown here.
    foreign_id = foreign[0].payload["id"]
    response, _ = fetch(http, "/v1/events", headers={"Last-Event-ID": foreign_id})
    assert_error(response, 400, "invalid_param", "last_event_id")


def test_a_long_account_backlog_has_no_gap(srv: ServerProcess) -> None:
    """Resuming 10,004 events back: the 10,001st event is the next stored one (or the
    stream ends there and the client resumes), never a later live one."""
    owner = quick_account(srv.data_dir, "backlog")
    with srv.client(owner.key) as http:
        real = submit(http, input={"seconds": 0})
        wait_status(http, real["id"], ["completed"])
        # Copies of a real event, written straight into the outbox after it.
        fake = [f"evt_{n:026d}" for n in range(10_005)]
        rows = [(evt, f"task_{n:026d}", owner.id) for n, evt in enumerate(fake)]
        # On PostgreSQL each needs its place in the outbox, as the store gives it.
        position = (
            "NULL"
            if postgres_url(srv.data_dir) is None
            else "(pg_current_xact_id()::text::bigint << 20)"
            " | (nextval('events_position_seq') & 1048575)"
        )
        sql_many(
            srv.data_dir,
            "INSERT INTO events (id, task_id, account_id, seq, type, created_at, data, position)"
            f" SELECT ?, ?, ?, 1, 'task.created', created_at, data, {position}"
            " FROM events WHERE task_id = ? AND seq = 1",
            [(*row, real["id"]) for row in rows],
        )
        marker: dict[str, Any] | None = None
        try:
            with open_stream(
                http, "/v1/events", headers={"Last-Event-ID": fake[0]}, timeout=30
            ) as stream:
                assert [e.id for e in stream.events(10_000)] == fake[1:10_001]
                marker = submit(http, input={"seconds": 30})
                following = stream.next_event()
            assert following is None or following.id == fake[10_001], following
        finally:
            if marker is not None:
                cancel_quietly(http, [marker["id"]])


def test_the_account_stream_needs_a_key(anonymous: httpx.Client, http: httpx.Client) -> None:
    response, _ = fetch(anonymous, "/v1/events")
    assert_error(response, 401, "invalid_api_key")
    # A task's stream token is not a key to the account's stream.
    token = token_of(submit(http, input={"seconds": 0}))
    response, _ = fetch(anonymous, "/v1/events", params={"token": token})
    assert_error(response, 401, "invalid_api_key")


# -- Prefer: wait=N ------------------------------------------------------------


def post_task(
    http: httpx.Client, path: str, prefer: str | bytes | None, **input_: Any
) -> tuple[httpx.Response, float]:
    """Submit a ``wait`` task (to /v1/tasks or the workflow's route); the response and
    how long it took."""
    headers: dict[bytes, bytes] = {}
    if prefer is not None:
        headers[b"Prefer"] = prefer.encode() if isinstance(prefer, str) else prefer
    body: dict[str, Any] = {"input": input_}
    if path == "/v1/tasks":
        body["workflow"] = "wait"
    started = time.monotonic()
    response = http.post(path, json=body, headers=headers)
    return response, time.monotonic() - started


SUBMIT_PATHS = ["/v1/tasks", "/v1/workflows/wait/tasks"]


@pytest.mark.parametrize("path", SUBMIT_PATHS)
def test_prefer_wait_returns_the_finished_task(http: httpx.Client, path: str) -> None:
    response, elapsed = post_task(http, path, "wait=10", seconds=0.5)
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == "wait=10"
    task = response.json()
    assert task["status"] == "completed", task
    assert task["progress"]["percent"] == 100.0
    assert elapsed < 5, elapsed
    got = get_task(http, task["id"])
    assert {k: v for k, v in got.items() if k != "links"} == {
        k: v for k, v in task.items() if k != "links"
    }


def test_prefer_wait_returns_a_failed_task(http: httpx.Client) -> None:
    response, elapsed = post_task(http, "/v1/tasks", "wait=10", seconds=0.2, fail=True)
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == "wait=10"
    assert response.json()["status"] == "failed"
    assert response.json()["error"]["code"] == "wait_failed"
    assert elapsed < 5, elapsed


@pytest.mark.parametrize("path", SUBMIT_PATHS)
def test_prefer_wait_gives_up_after_n_seconds(http: httpx.Client, path: str) -> None:
    response, elapsed = post_task(http, path, "wait=1", seconds=5)
    try:
        assert response.status_code == 201, response.text
        assert response.headers["preference-applied"] == "wait=1"
        task = response.json()
        assert task["status"] in ("queued", "running"), task
        assert elapsed >= 1.0, elapsed
        assert elapsed < 4, elapsed
    finally:
        cancel_quietly(http, [response.json()["id"]])


@pytest.mark.parametrize(
    ("prefer", "applied"),
    [
        ("wait=600", "wait=60"),
        ("wait=60", "wait=60"),
        ("WAIT=7", "wait=7"),
        ('wait="9"', "wait=9"),
        ("respond-async, wait=8", "wait=8"),
        ("wait=6; foo=bar", "wait=6"),
        ("wait = 5", "wait=5"),
    ],
)
def test_prefer_wait_forms_and_cap(http: httpx.Client, prefer: str, applied: str) -> None:
    """N is capped at 60; the preference is found among others (RFC 7240)."""
    response, elapsed = post_task(http, "/v1/tasks", prefer, seconds=0.2)
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == applied
    assert response.json()["status"] == "completed"
    assert elapsed < 5, elapsed


@pytest.mark.parametrize(
    "prefer",
    [None, "wait=abc", "wait=", "wait", "wait=1.5", "wait=-1", "respond-async", "", "waiting=3"],
)
def test_no_or_garbage_prefer_does_not_wait(http: httpx.Client, prefer: str | None) -> None:
    response, _ = post_task(http, "/v1/tasks", prefer, seconds=30)
    try:
        assert response.status_code == 201, response.text
        assert "preference-applied" not in response.headers
        assert response.json()["status"] not in TERMINAL
    finally:
        cancel_quietly(http, [response.json()["id"]])


def test_prefer_wait_on_an_idempotent_replay(http: httpx.Client) -> None:
    """The replay of a finished task answers at once (200), the preference applied."""
    headers = {"Idempotency-Key": f"prefer-{time.monotonic_ns()}", "Prefer": "wait=10"}
    body = {"workflow": "wait", "input": {"seconds": 0.2}}
    first = http.post("/v1/tasks", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["status"] == "completed", first.text
    again = http.post("/v1/tasks", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers["preference-applied"] == "wait=10"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "completed"


def test_prefer_wait_with_a_superscript_digit_is_ignored(http: httpx.Client) -> None:
    response, _ = post_task(http, "/v1/tasks", b"wait=\xb2", seconds=0)
    assert response.status_code == 201, response.text
    assert "preference-applied" not in response.headers
