"""Cancelling and deleting tasks over real HTTP, in every state they can be in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    Account,
    assert_error,
    cancel_quietly,
    create_account,
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

UNKNOWN = "task_01J0000000000000000000000Z"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "cancel")


@pytest.fixture(scope="module")
def single(srv: ServerProcess) -> Account:
    """An account that runs one task at a time: a task behind a running one stays queued."""
    return create_account(srv, "single", concurrency=1)


@pytest.fixture(scope="module")
def stranger(srv: ServerProcess) -> Account:
    return create_account(srv, "stranger")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


@pytest.fixture
def blocked(srv: ServerProcess, single: Account) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    """The single-slot account with its slot taken by a long task (cancelled afterwards)."""
    with srv.client(single.key) as client:
        blocker = submit(client, input={"seconds": 300})
        blocker = wait_status(client, blocker["id"], ["running"])
        try:
            yield client, blocker
        finally:
            cancel_quietly(client, [blocker["id"]])
            wait_status(client, blocker["id"], ["cancelled"])


def _same(http: httpx.Client, task: dict[str, Any]) -> None:
    """The task reads back unchanged."""
    response = http.get(f"/v1/tasks/{task['id']}")
    assert response.status_code == 200, response.text
    assert stable(response.json()) == stable(task)


# -- cancel ------------------------------------------------------------------------


def test_cancel_a_queued_task(blocked: tuple[httpx.Client, dict[str, Any]]) -> None:
    http, blocker = blocked
    queued = submit(http, input={"seconds": 1})
    assert http.get(f"/v1/tasks/{queued['id']}").json()["status"] == "queued"

    response = http.post(f"/v1/tasks/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["id"] == queued["id"]
    assert task["status"] == "cancelled"
    assert task["completed_at"] is not None
    assert task["started_at"] is None
    assert task["attempts"] == 0
    assert task["queue_position"] is None
    assert "retry-after" not in response.headers
    _same(http, task)

    again = http.post(f"/v1/tasks/{queued['id']}/cancel")
    assert again.status_code == 200, again.text
    assert stable(again.json()) == stable(task)
    # The task never runs, and the one in front of it is untouched.
    assert http.get(f"/v1/tasks/{blocker['id']}").json()["status"] == "running"
    assert http.get(f"/v1/tasks/{queued['id']}").json()["status"] == "cancelled"


def test_cancel_a_running_task(http: httpx.Client) -> None:
    running = wait_status(http, submit(http, input={"seconds": 300})["id"], ["running"])
    response = http.post(f"/v1/tasks/{running['id']}/cancel")
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "running"
    assert task["cancel_requested_at"] is not None
    assert parse_time(task["cancel_requested_at"]) >= parse_time(task["started_at"])
    assert "retry-after" in response.headers

    done = wait_status(http, running["id"], ["cancelled", "failed", "completed"], timeout=15)
    assert done["status"] == "cancelled"
    assert done["cancel_requested_at"] == task["cancel_requested_at"]
    assert done["completed_at"] is not None
    again = http.post(f"/v1/tasks/{running['id']}/cancel")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "cancelled"


def test_cancel_twice_while_it_is_still_running(http: httpx.Client) -> None:
    # ``stubborn`` ignores the request and is stopped when the grace period (1 s) ends.
    running = wait_status(http, submit(http, "stubborn", input={"seconds": 60})["id"], ["running"])
    first = http.post(f"/v1/tasks/{running['id']}/cancel")
    second = http.post(f"/v1/tasks/{running['id']}/cancel")
    assert first.status_code == 202, first.text
    assert second.status_code == 202, second.text
    assert second.json()["status"] == "running"
    assert second.json()["cancel_requested_at"] == first.json()["cancel_requested_at"]
    done = wait_status(http, running["id"], ["cancelled", "failed", "completed"], timeout=15)
    assert done["status"] == "cancelled"
    assert done["cancel_requested_at"] == first.json()["cancel_requested_at"]


@pytest.mark.parametrize(
    ("input_", "status"),
    [({"seconds": 0}, "completed"), ({"fail": True}, "failed")],
)
def test_a_finished_task_is_not_cancellable(
    http: httpx.Client, input_: dict[str, Any], status: str
) -> None:
    task = wait_status(http, submit(http, input=input_)["id"], [status])
    response = http.post(f"/v1/tasks/{task['id']}/cancel")
    error = assert_error(response, 409, "task_not_cancellable")
    assert status in error["message"]
    _same(http, task)


def test_cancel_an_unknown_task(http: httpx.Client) -> None:
    before = task_ids(http)
    assert_error(http.post(f"/v1/tasks/{UNKNOWN}/cancel"), 404, "task_not_found")
    assert_error(http.post("/v1/tasks/nope/cancel"), 404, "task_not_found")
    assert task_ids(http) == before


def test_cancel_another_accounts_task(
    srv: ServerProcess, stranger: Account, blocked: tuple[httpx.Client, dict[str, Any]]
) -> None:
    owner, blocker = blocked
    queued = submit(owner, input={"seconds": 1})
    with srv.client(stranger.key) as them:
        for task in (queued, blocker):
            assert_error(them.post(f"/v1/tasks/{task['id']}/cancel"), 404, "task_not_found")
            assert_error(them.delete(f"/v1/tasks/{task['id']}"), 404, "task_not_found")
            assert_error(them.get(f"/v1/tasks/{task['id']}"), 404, "task_not_found")
    assert owner.get(f"/v1/tasks/{queued['id']}").json()["status"] == "queued"
    running = owner.get(f"/v1/tasks/{blocker['id']}").json()
    assert running["status"] == "running" and running["cancel_requested_at"] is None
    cancel_quietly(owner, [queued["id"]])


# -- delete ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_", "status"),
    [({"seconds": 0}, "completed"), ({"fail": True}, "failed")],
)
def test_delete_a_finished_task(http: httpx.Client, input_: dict[str, Any], status: str) -> None:
    task = wait_status(
        http, submit(http, input=input_, out_task_id=f"del-{status}")["id"], [status]
    )
    before = task_ids(http)
    response = http.delete(f"/v1/tasks/{task['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": task["id"], "object": "task", "deleted": True}
    assert task_ids(http) == [t for t in before if t != task["id"]]
    assert_error(http.get(f"/v1/tasks/{task['id']}"), 404, "task_not_found")
    assert_error(
        http.post("/v1/tasks/query", json={"out_task_id": f"del-{status}"}), 404, "task_not_found"
    )
    assert_error(http.post(f"/v1/tasks/{task['id']}/cancel"), 404, "task_not_found")
    assert_error(http.delete(f"/v1/tasks/{task['id']}"), 404, "task_not_found")


def test_delete_a_cancelled_task(blocked: tuple[httpx.Client, dict[str, Any]]) -> None:
    http, _ = blocked
    queued = submit(http, input={"seconds": 1})
    assert http.post(f"/v1/tasks/{queued['id']}/cancel").status_code == 200
    response = http.delete(f"/v1/tasks/{queued['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] is True
    assert_error(http.get(f"/v1/tasks/{queued['id']}"), 404, "task_not_found")
    assert queued["id"] not in task_ids(http)


def test_a_queued_or_running_task_cannot_be_deleted(
    blocked: tuple[httpx.Client, dict[str, Any]],
) -> None:
    http, blocker = blocked
    queued = submit(http, input={"seconds": 1})
    before = task_ids(http)
    for task in (queued, blocker):
        assert_error(http.delete(f"/v1/tasks/{task['id']}"), 409, "task_running")
    assert task_ids(http) == before
    assert http.get(f"/v1/tasks/{queued['id']}").json()["status"] == "queued"
    assert http.get(f"/v1/tasks/{blocker['id']}").json()["status"] == "running"
    cancel_quietly(http, [queued["id"]])


def test_delete_an_unknown_task(http: httpx.Client) -> None:
    before = task_ids(http)
    assert_error(http.delete(f"/v1/tasks/{UNKNOWN}"), 404, "task_not_found")
    assert_error(http.delete("/v1/tasks/nope"), 404, "task_not_found")
    assert task_ids(http) == before
