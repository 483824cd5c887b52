"""Idempotent submission over real HTTP: ``out_task_id`` in the body and the
``Idempotency-Key`` header share one key space per account."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    Account,
    assert_error,
    create_account,
    module_server,
    stable,
    task_ids,
)
from tests.databases import Backend
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    # No workers: tasks stay queued, so a repeated submission is compared with a
    # task that cannot have changed in between.
    yield from module_server(tmp_path_factory, backend, "--no-workers")


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "idem")


@pytest.fixture(scope="module")
def other(srv: ServerProcess) -> Account:
    return create_account(srv, "idem-other")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


def _key() -> str:
    return f"key-{uuid.uuid4().hex}"


def _by_key(http: httpx.Client, key: str) -> httpx.Response:
    return http.post("/v1/tasks/query", json={"out_task_id": key})


def test_out_task_id_in_the_body(http: httpx.Client) -> None:
    key = _key()
    body = {"workflow": "wait", "input": {"seconds": 1}, "out_task_id": key}
    first = http.post("/v1/tasks", json=body)
    assert first.status_code == 201, first.text
    task = first.json()
    assert task["out_task_id"] == key
    ids = task_ids(http)

    again = http.post("/v1/tasks", json=body)
    assert again.status_code == 200, again.text
    assert stable(again.json()) == stable(task)
    assert "retry-after" in again.headers
    assert task_ids(http) == ids
    found = _by_key(http, key)
    assert found.status_code == 200
    assert found.json()["id"] == task["id"]


def test_idempotency_key_header_becomes_out_task_id(http: httpx.Client) -> None:
    key = _key()
    body = {"workflow": "wait", "input": {"seconds": 1}, "metadata": {"a": "b"}}
    first = http.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    task = first.json()
    assert task["out_task_id"] == key
    ids = task_ids(http)

    again = http.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert stable(again.json()) == stable(task)
    # One key space: the same key in the body finds the task the header made ...
    in_body = http.post("/v1/tasks", json={**body, "out_task_id": key})
    assert in_body.status_code == 200, in_body.text
    assert in_body.json()["id"] == task["id"]
    # ... and so does the other submission route, for the same request.
    named = http.post(
        "/v1/workflows/wait/tasks",
        json={"input": {"seconds": 1}, "metadata": {"a": "b"}},
        headers={"Idempotency-Key": key},
    )
    assert named.status_code == 200, named.text
    assert named.json()["id"] == task["id"]
    assert task_ids(http) == ids
    assert _by_key(http, key).json()["id"] == task["id"]


def test_header_and_body_may_both_carry_the_same_key(http: httpx.Client) -> None:
    key = _key()
    response = http.post(
        "/v1/tasks",
        json={"workflow": "wait", "out_task_id": key},
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    assert response.json()["out_task_id"] == key


def test_header_and_body_with_different_keys(http: httpx.Client) -> None:
    before = task_ids(http)
    header, body_key = _key(), _key()
    response = http.post(
        "/v1/tasks",
        json={"workflow": "wait", "out_task_id": body_key},
        headers={"Idempotency-Key": header},
    )
    assert_error(response, 400, "invalid_param", "out_task_id")
    assert task_ids(http) == before
    assert_error(_by_key(http, header), 404, "task_not_found")
    assert_error(_by_key(http, body_key), 404, "task_not_found")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"input": {"seconds": 2}}, id="input"),
        pytest.param({"metadata": {"a": "c"}}, id="metadata"),
        pytest.param({"priority": 3}, id="priority"),
        pytest.param({"workflow": "probe", "input": {}}, id="workflow"),
        # A public address, checked without a lookup; the conflict creates no task,
        # so nothing is ever sent there.
        pytest.param({"callback_url": "https://93.184.215.14/cb"}, id="callback"),
    ],
)
def test_same_key_with_a_different_request_conflicts(
    http: httpx.Client, change: dict[str, Any]
) -> None:
    key = _key()
    body = {"workflow": "wait", "input": {"seconds": 1}, "metadata": {"a": "b"}}
    first = http.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    before = task_ids(http)

    for headers, extra in (({"Idempotency-Key": key}, {}), ({}, {"out_task_id": key})):
        response = http.post("/v1/tasks", json={**body, **change, **extra}, headers=headers)
        assert_error(response, 409, "idempotency_conflict")
    assert task_ids(http) == before
    assert stable(http.get(f"/v1/tasks/{first.json()['id']}").json()) == stable(first.json())


def test_default_values_spelled_out_are_the_same_request(http: httpx.Client) -> None:
    key = _key()
    first = http.post("/v1/tasks", json={"workflow": "wait"}, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    spelled = {"workflow": "wait", "input": {"seconds": 0, "steps": 1}, "priority": 0}
    again = http.post("/v1/tasks", json=spelled, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * 255, id="255-chars"),
        pytest.param(" !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~", id="all-punctuation"),
        pytest.param("x", id="one-char"),
    ],
)
def test_longest_and_oddest_valid_keys(http: httpx.Client, key: str) -> None:
    first = http.post("/v1/tasks", json={"workflow": "wait", "out_task_id": key})
    assert first.status_code == 201, first.text
    assert first.json()["out_task_id"] == key
    if key == key.strip():  # HTTP trims header whitespace; only send what survives it
        again = http.post("/v1/tasks", json={"workflow": "wait"}, headers={"Idempotency-Key": key})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"k" * 256, id="256-chars"),
        pytest.param(b"a\tb", id="tab"),
        pytest.param("caf\u00e9".encode("latin-1"), id="latin-1"),
        pytest.param("caf\u00e9".encode(), id="utf-8"),
        pytest.param(b"", id="empty"),
    ],
)
def test_bad_idempotency_key_header(http: httpx.Client, value: bytes) -> None:
    before = task_ids(http)
    response = http.post(
        "/v1/tasks", json={"workflow": "wait"}, headers=[(b"Idempotency-Key", value)]
    )
    assert_error(response, 400, "invalid_param", "Idempotency-Key")
    named = http.post("/v1/workflows/wait/tasks", json={}, headers=[(b"Idempotency-Key", value)])
    assert_error(named, 400, "invalid_param", "Idempotency-Key")
    assert task_ids(http) == before


@pytest.mark.parametrize("value", [b"a\x7fb", b"a\x01b"], ids=["del", "ctrl-a"])
def test_header_bytes_http_forbids_are_refused(http: httpx.Client, value: bytes) -> None:
    # Uvicorn's HTTP parser refuses these before the application sees the request,
    # so only the status is ours to check; nothing may be written all the same.
    before = task_ids(http)
    response = http.post(
        "/v1/tasks", json={"workflow": "wait"}, headers=[(b"Idempotency-Key", value)]
    )
    assert response.status_code == 400, response.text
    assert task_ids(http) == before


def test_fifty_concurrent_submissions_with_one_key(srv: ServerProcess) -> None:
    acct = create_account(srv, "idem-race")
    key = _key()
    body = {"workflow": "wait", "input": {"seconds": 5}, "metadata": {"race": "yes"}}
    callers = 50
    start = threading.Barrier(callers)

    def submit(_: int) -> tuple[int, str]:
        with srv.client(acct.key) as client:
            start.wait(timeout=30)
            response = client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
            return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(submit, range(callers)))

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 200: callers - 1}, results
    ids = {task_id for _, task_id in results}
    assert len(ids) == 1, results
    with srv.client(acct.key) as http:
        assert task_ids(http) == list(ids)
        found = _by_key(http, key)
        assert found.status_code == 200
        assert found.json()["id"] in ids


def test_two_accounts_use_the_same_key_independently(
    srv: ServerProcess, acct: Account, other: Account
) -> None:
    key = _key()
    with srv.client(acct.key) as mine, srv.client(other.key) as theirs:
        a = mine.post(
            "/v1/tasks",
            json={"workflow": "wait", "input": {"seconds": 1}},
            headers={"Idempotency-Key": key},
        )
        # A different request under the same key is no conflict in another account.
        b = theirs.post(
            "/v1/tasks",
            json={"workflow": "wait", "input": {"seconds": 2}},
            headers={"Idempotency-Key": key},
        )
        assert a.status_code == 201, a.text
        assert b.status_code == 201, b.text
        assert a.json()["id"] != b.json()["id"]
        assert _by_key(mine, key).json()["id"] == a.json()["id"]
        assert _by_key(theirs, key).json()["id"] == b.json()["id"]
        assert b.json()["id"] not in task_ids(mine)
        assert a.json()["id"] not in task_ids(theirs)
        again = theirs.post(
            "/v1/tasks",
            json={"workflow": "wait", "input": {"seconds": 2}},
            headers={"Idempotency-Key": key},
        )
        assert again.status_code == 200, again.text
        assert again.json()["id"] == b.json()["id"]
