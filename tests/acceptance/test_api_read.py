"""Reading tasks over real HTTP: get, query, and the list with its cursor and filters."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    TERMINAL,
    Account,
    assert_error,
    cancel_quietly,
    create_account,
    list_all,
    module_server,
    parse_time,
    stable,
    submit,
    task_ids,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "read")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


@pytest.fixture(scope="module")
def mix(srv: ServerProcess) -> Iterator[dict[str, Any]]:
    """An account (one task at a time) holding a task in every state:
    completed, failed, running, queued behind it, and cancelled."""
    acct = create_account(srv, "mix", concurrency=1)
    with srv.client(acct.key) as http:
        done = submit(http, input={"seconds": 0}, metadata={"color": "red", "size": "L"})
        done = wait_status(http, done["id"], ["completed"])
        failed = submit(http, input={"fail": True}, metadata={"color": "blue"})
        failed = wait_status(http, failed["id"], ["failed"])
        running = submit(http, "probe", input={"seconds": 120}, metadata={"color": "red"})
        running = wait_status(http, running["id"], ["running"])
        queued = submit(http, metadata={"color": "red", "size": "S", "we.ird": "a b", "a": "x"})
        cancelled = submit(http, metadata={"color": "green"})
        response = http.post(f"/v1/tasks/{cancelled['id']}/cancel")
        assert response.status_code == 200, response.text
        cancelled = response.json()
        queued = http.get(f"/v1/tasks/{queued['id']}").json()
        assert queued["status"] == "queued"
        tasks = {
            "completed": done,
            "failed": failed,
            "running": running,
            "queued": queued,
            "cancelled": cancelled,
        }
        try:
            yield {"account": acct, "tasks": tasks}
        finally:
            cancel_quietly(http, [queued["id"], running["id"]])


# -- get -------------------------------------------------------------------------


def test_get_a_task(srv: ServerProcess, http: httpx.Client) -> None:
    created = submit(http, input={"seconds": 0}, metadata={"k": "v"})
    response = http.get(f"/v1/tasks/{created['id']}")
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["id"] == created["id"]
    assert got["object"] == "task"
    assert got["metadata"] == {"k": "v"}
    assert got["links"]["self"] == f"{srv.base_url}/v1/tasks/{created['id']}"
    assert set(got) == set(created)


@pytest.mark.parametrize(
    "task_id",
    [
        "task_01J0000000000000000000000Z",
        "task_",
        "nope",
        "acct_01J00000000000000000000000",
        "task_01J0000000000000000000000%27%20OR%201=1--",
    ],
)
def test_get_an_unknown_task(http: httpx.Client, task_id: str) -> None:
    assert_error(http.get(f"/v1/tasks/{task_id}"), 404, "task_not_found")


# -- query -------------------------------------------------------------------------


def test_query_by_task_id_and_by_out_task_id(http: httpx.Client) -> None:
    created = submit(http, input={"seconds": 0}, out_task_id="query-me")
    wait_status(http, created["id"], ["completed"])  # so that it cannot change between reads
    by_id = http.post("/v1/tasks/query", json={"task_id": created["id"]})
    by_out = http.post("/v1/tasks/query", json={"out_task_id": "query-me"})
    for response in (by_id, by_out):
        assert response.status_code == 200, response.text
        assert response.json()["id"] == created["id"]
        assert response.json()["out_task_id"] == "query-me"
    assert stable(by_id.json()) == stable(http.get(f"/v1/tasks/{created['id']}").json())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="neither"),
        pytest.param({"task_id": None, "out_task_id": None}, id="both-null"),
        pytest.param({"task_id": "task_x", "out_task_id": "y"}, id="both"),
    ],
)
def test_query_needs_exactly_one(http: httpx.Client, body: dict[str, Any]) -> None:
    before = task_ids(http)
    assert_error(http.post("/v1/tasks/query", json=body), 400, "invalid_param", "task_id")
    assert task_ids(http) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"task_id": "task_01J0000000000000000000000Z"}, id="task_id"),
        pytest.param({"out_task_id": "never-used"}, id="out_task_id"),
    ],
)
def test_query_an_unknown_task(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_error(http.post("/v1/tasks/query", json=body), 404, "task_not_found")


@pytest.mark.parametrize(
    ("content", "status", "code", "param"),
    [
        pytest.param(b"{nope", 400, "invalid_json", None, id="malformed"),
        pytest.param(b'{"task_id": 5}', 422, "invalid_param", "task_id", id="int"),
        pytest.param(b'{"id": "task_x"}', 422, "invalid_param", "id", id="unknown-field"),
        pytest.param(b"[]", 422, "invalid_param", None, id="array"),
    ],
)
def test_query_bad_bodies(
    http: httpx.Client, content: bytes, status: int, code: str, param: str | None
) -> None:
    response = http.post(
        "/v1/tasks/query", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(response, status, code, param)


# -- list: shape and paging ---------------------------------------------------------


def test_list_shape_and_an_empty_account(srv: ServerProcess) -> None:
    acct = create_account(srv, "empty")
    with srv.client(acct.key) as http:
        response = http.get("/v1/tasks")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "object": "list",
            "data": [],
            "has_more": False,
            "next_cursor": None,
        }
        task = submit(http)
        body = http.get("/v1/tasks").json()
        assert set(body) == {"object", "data", "has_more", "next_cursor"}
        assert body["object"] == "list"
        assert [t["id"] for t in body["data"]] == [task["id"]]
        assert body["data"][0]["object"] == "task"
        assert (body["has_more"], body["next_cursor"]) == (False, None)


def test_cursor_walks_every_task_once_newest_first(srv: ServerProcess) -> None:
    acct = create_account(srv, "paging")
    with srv.client(acct.key) as http:
        made = [submit(http)["id"] for _ in range(23)]
        newest_first = list(reversed(made))
        for limit in (1, 5, 7, 23, 100):
            seen: list[str] = []
            cursor: str | None = None
            pages = 0
            while True:
                params: dict[str, Any] = {"limit": limit}
                if cursor is not None:
                    params["cursor"] = cursor
                response = http.get("/v1/tasks", params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                pages += 1
                assert len(page["data"]) <= limit
                seen.extend(t["id"] for t in page["data"])
                if not page["has_more"]:
                    assert page["next_cursor"] is None
                    break
                assert len(page["data"]) == limit
                assert isinstance(page["next_cursor"], str) and page["next_cursor"]
                cursor = page["next_cursor"]
            assert seen == newest_first, limit
            assert pages == -(-23 // limit), limit  # a full last page says has_more false
        default = http.get("/v1/tasks").json()
        assert len(default["data"]) == 20 and default["has_more"] is True


def test_a_cursor_stays_valid_while_new_tasks_arrive(srv: ServerProcess) -> None:
    acct = create_account(srv, "paging-live")
    with srv.client(acct.key) as http:
        made = [submit(http)["id"] for _ in range(6)]
        first = http.get("/v1/tasks", params={"limit": 3}).json()
        newer = submit(http)["id"]
        rest = http.get("/v1/tasks", params={"limit": 3, "cursor": first["next_cursor"]}).json()
        assert [t["id"] for t in first["data"] + rest["data"]] == list(reversed(made))
        assert newer not in [t["id"] for t in rest["data"]]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
def test_bad_limit(http: httpx.Client, limit: str) -> None:
    assert_error(http.get("/v1/tasks", params={"limit": limit}), 400, "invalid_param", "limit")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "abc",
        base64.urlsafe_b64encode(b"acct_01J0000000000000000000000").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        "%%%",
    ],
)
def test_bad_cursor(http: httpx.Client, cursor: str) -> None:
    assert_error(http.get("/v1/tasks", params={"cursor": cursor}), 400, "invalid_param", "cursor")


# -- list: filters ---------------------------------------------------------------


def _ids(srv: ServerProcess, mix: dict[str, Any], **params: Any) -> list[str]:
    with srv.client(mix["account"].key) as http:
        return task_ids(http, **params)


def _names(mix: dict[str, Any], ids: list[str]) -> list[str]:
    by_id = {task["id"]: name for name, task in mix["tasks"].items()}
    return [by_id[task_id] for task_id in ids]


NEWEST_FIRST = ["cancelled", "queued", "running", "failed", "completed"]


def test_list_without_filters(srv: ServerProcess, mix: dict[str, Any]) -> None:
    assert _names(mix, _ids(srv, mix)) == NEWEST_FIRST


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", ["queued"]),
        ("running", ["running"]),
        ("completed", ["completed"]),
        ("failed", ["failed"]),
        ("cancelled", ["cancelled"]),
        ("completed,failed,cancelled", ["cancelled", "failed", "completed"]),
        ("queued, running", ["queued", "running"]),
        ("queued,queued", ["queued"]),
    ],
)
def test_status_filter(
    srv: ServerProcess, mix: dict[str, Any], status: str, expected: list[str]
) -> None:
    assert _names(mix, _ids(srv, mix, status=status)) == expected


@pytest.mark.parametrize("status", ["bogus", "queued,bogus", "QUEUED", "done"])
def test_unknown_status(srv: ServerProcess, mix: dict[str, Any], status: str) -> None:
    with srv.client(mix["account"].key) as http:
        response = http.get("/v1/tasks", params={"status": status})
        assert_error(response, 400, "invalid_param", "status")


def test_workflow_filter(srv: ServerProcess, mix: dict[str, Any]) -> None:
    assert _names(mix, _ids(srv, mix, workflow="probe")) == ["running"]
    assert _names(mix, _ids(srv, mix, workflow="wait")) == [
        "cancelled",
        "queued",
        "failed",
        "completed",
    ]
    assert _ids(srv, mix, workflow="nope") == []
    assert _names(mix, _ids(srv, mix, workflow="wait", status="queued,completed")) == [
        "queued",
        "completed",
    ]


def test_created_after_and_before(srv: ServerProcess, mix: dict[str, Any]) -> None:
    tasks = mix["tasks"]
    failed_at = tasks["failed"]["created_at"]
    queued_at = tasks["queued"]["created_at"]
    assert _names(mix, _ids(srv, mix, created_after=failed_at)) == [
        "cancelled",
        "queued",
        "running",
    ]
    assert _names(mix, _ids(srv, mix, created_before=queued_at)) == [
        "running",
        "failed",
        "completed",
    ]
    both = _ids(srv, mix, created_after=failed_at, created_before=queued_at)
    assert _names(mix, both) == ["running"]
    # Other spellings of the same instant: an explicit offset, and a naive time (UTC).
    instant = parse_time(failed_at)
    shifted = (instant + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    assert _ids(srv, mix, created_after=shifted) == _ids(srv, mix, created_after=failed_at)
    naive = instant.replace(tzinfo=None).isoformat()
    assert _ids(srv, mix, created_after=naive) == _ids(srv, mix, created_after=failed_at)
    assert _ids(srv, mix, created_after="2999-01-01T00:00:00Z") == []
    assert _ids(srv, mix, created_before="2000-01-01") == []


@pytest.mark.parametrize("param", ["created_after", "created_before"])
@pytest.mark.parametrize("value", ["garbage", "2024-13-01", "yesterday", "1700000000", ""])
def test_bad_times(srv: ServerProcess, mix: dict[str, Any], param: str, value: str) -> None:
    with srv.client(mix["account"].key) as http:
        assert_error(http.get("/v1/tasks", params={param: value}), 400, "invalid_param", param)


def test_metadata_filter(srv: ServerProcess, mix: dict[str, Any]) -> None:
    def names(**params: str) -> list[str]:
        return _names(mix, _ids(srv, mix, **params))

    assert names(**{"metadata[color]": "red"}) == ["queued", "running", "completed"]
    assert names(**{"metadata[color]": "red", "metadata[size]": "L"}) == ["completed"]
    assert names(**{"metadata[color]": "red", "status": "queued"}) == ["queued"]
    assert names(**{"metadata[we.ird]": "a b"}) == ["queued"]
    assert names(**{"metadata[color]": "purple"}) == []
    assert names(**{"metadata[nothere]": "red"}) == []
    assert names(**{"metadata[color]": "RED"}) == []


@pytest.mark.parametrize("key", ['a"b', 'color"', 'color".x', '"', "a\\b", "$.color", "color]"])
def test_metadata_filter_with_odd_keys(srv: ServerProcess, mix: dict[str, Any], key: str) -> None:
    """Odd keys never reach the database as syntax: no match, or a clear 400."""
    with srv.client(mix["account"].key) as http:
        response = http.get("/v1/tasks", params={f"metadata[{key}]": "red"})
        if response.status_code == 200:
            assert response.json()["data"] == []
        else:
            assert_error(response, 400, "invalid_param", f"metadata[{key}]")


def test_list_shows_only_the_callers_tasks(
    srv: ServerProcess, http: httpx.Client, mix: dict[str, Any]
) -> None:
    # One of the caller's own, whichever other tests of the module ran before.
    created = http.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0}})
    assert created.status_code == 201, created.text
    mine = set(task_ids(http))
    theirs = {task["id"] for task in mix["tasks"].values()}
    assert created.json()["id"] in mine and not mine & theirs
    assert set(_ids(srv, mix)) == theirs


# -- Retry-After ----------------------------------------------------------------


def test_retry_after_only_while_not_terminal(srv: ServerProcess, mix: dict[str, Any]) -> None:
    with srv.client(mix["account"].key) as http:
        for name, task in mix["tasks"].items():
            for response in (
                http.get(f"/v1/tasks/{task['id']}"),
                http.post("/v1/tasks/query", json={"task_id": task["id"]}),
            ):
                assert response.status_code == 200, response.text
                assert response.json()["status"] == name
                if name in TERMINAL:
                    assert "retry-after" not in response.headers, name
                else:
                    hint = int(response.headers["retry-after"])
                    assert 1 <= hint <= 30, (name, hint)
        running = http.get(f"/v1/tasks/{mix['tasks']['running']['id']}")
        # 120 s expected: a fifth of what is left (capped at 30 s), not the 1 s floor.
        assert int(running.headers["retry-after"]) >= 5
        assert "retry-after" not in http.get("/v1/tasks").headers


def test_each_task_in_the_mix_reads_back_consistently(
    srv: ServerProcess, mix: dict[str, Any]
) -> None:
    with srv.client(mix["account"].key) as http:
        listed = {task["id"]: task for task in list_all(http)}
        for name, task in mix["tasks"].items():
            got = http.get(f"/v1/tasks/{task['id']}").json()
            assert got["status"] == name
            assert stable(listed[task["id"]]) == stable(got)
            if name == "queued":
                assert got["queue_position"] is not None
                assert got["estimated_seconds"] is not None
                assert got["estimated_completion"] is not None
            else:
                assert got["queue_position"] is None
            if name in TERMINAL:
                assert got["completed_at"] is not None
            if name == "running":
                assert got["started_at"] is not None and got["attempts"] == 1
            if name == "failed":
                assert got["error"]["code"] == "wait_failed"
