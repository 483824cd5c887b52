"""Submitting tasks over real HTTP: ``POST /v1/tasks`` and ``POST /v1/workflows/{name}/tasks``.

Every rejected submission must answer with the one error shape and write nothing:
the account's task list is read back after each one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    TASK_ID,
    Account,
    assert_error,
    cancel_quietly,
    create_account,
    module_server,
    parse_time,
    stable,
    task_ids,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance

WAIT_DEFAULTS = {
    "seconds": 0.0,
    "steps": 1,
    "fail": False,
    "retryable": False,
    "fail_attempts": 0,
    "output_bytes": 0,
    "credits": "0",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    # Callback URLs of these tests point at a closed port on 127.0.0.1.
    yield from module_server(tmp_path_factory, backend, env={"TASKGATE_ALLOW_PRIVATE_URLS": "true"})


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "submit")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


# -- the good path -------------------------------------------------------------


def test_submit_returns_the_whole_task_object(srv: ServerProcess, http: httpx.Client) -> None:
    before = set(task_ids(http))
    response = http.post(
        "/v1/tasks",
        json={
            "workflow": "wait",
            "input": {"seconds": 0.3, "steps": 3},
            "metadata": {"order": "A-17", "user": "ada"},
            "priority": 5,
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) >= 1
    task = response.json()
    assert TASK_ID.match(task["id"]), task["id"]
    assert task["object"] == "task"
    assert task["workflow"] == "wait"
    assert task["workflow_version"] == "1"
    assert task["status"] == "queued"
    assert task["input"] == {**WAIT_DEFAULTS, "seconds": 0.3, "steps": 3}
    assert task["metadata"] == {"order": "A-17", "user": "ada"}
    assert task["out_task_id"] is None
    assert task["priority"] == 5
    assert task["progress"] == {"percent": 0.0, "stage": None, "message": None}
    assert isinstance(task["queue_position"], int) and task["queue_position"] >= 0
    assert task["estimated_seconds"] == pytest.approx(0.3)
    created = parse_time(task["created_at"])
    eta = parse_time(task["estimated_completion"])
    assert created <= eta <= created + timedelta(seconds=60)
    assert task["output"] == []
    assert task["warnings"] == []
    assert task["error"] is None
    assert task["usage"] == {"lines": [], "credits": "0"}
    assert task["billing"] == {
        "estimated_credits": "0",
        "reserved_credits": "0",
        "charged_credits": None,
        "refunded_credits": None,
        "currency": "credits",
    }
    assert task["attempts"] == 0
    assert task["max_attempts"] == 3
    assert task["callback"] is None
    assert task["started_at"] is None
    assert task["completed_at"] is None
    assert task["cancel_requested_at"] is None
    url = f"{srv.base_url}/v1/tasks/{task['id']}"
    links = dict(task["links"])
    events, _, token = links.pop("events").partition("?token=")
    assert links == {"self": url, "cancel": f"{url}/cancel"}
    # The event stream's link carries a signed token that opens that stream only.
    assert events == f"{url}/events"
    assert token
    # Exactly one task was added, and reading it back gives the same record.
    assert set(task_ids(http)) == before | {task["id"]}

    done = wait_status(http, task["id"], ["completed"])
    assert done["progress"]["percent"] == 100
    assert done["output"] == [{"waited_seconds": 0.3, "steps": 3}]
    assert done["usage"] == {"wait_seconds": 0.3, "lines": [], "credits": "0"}
    assert done["billing"]["charged_credits"] == "0"
    assert done["billing"]["refunded_credits"] == "0"
    assert done["attempts"] == 1
    assert done["queue_position"] is None
    assert done["estimated_seconds"] is None
    assert done["estimated_completion"] is None
    assert parse_time(done["created_at"]) <= parse_time(done["started_at"])
    assert parse_time(done["started_at"]) <= parse_time(done["completed_at"])
    for key in ("id", "input", "metadata", "priority", "created_at"):
        assert done[key] == task[key], key
    assert done["links"]["self"] == task["links"]["self"]


def test_submit_to_a_named_workflow(srv: ServerProcess, http: httpx.Client) -> None:
    before = set(task_ids(http))
    response = http.post(
        "/v1/workflows/wait/tasks", json={"input": {"seconds": 0}, "metadata": {"via": "path"}}
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert TASK_ID.match(task["id"])
    assert task["workflow"] == "wait"
    assert task["input"] == WAIT_DEFAULTS
    assert task["metadata"] == {"via": "path"}
    assert task["priority"] == 0
    assert set(task_ids(http)) == before | {task["id"]}
    assert wait_status(http, task["id"], ["completed"])["output"] == [
        {"waited_seconds": 0.0, "steps": 1}
    ]


def test_empty_body_object_takes_every_default(http: httpx.Client) -> None:
    response = http.post("/v1/workflows/wait/tasks", json={})
    assert response.status_code == 201, response.text
    task = response.json()
    assert (task["input"], task["metadata"], task["priority"]) == (WAIT_DEFAULTS, {}, 0)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"metadata": {f"k{i:02d}": "v" for i in range(50)}}, id="50-keys"),
        pytest.param({"metadata": {"k" * 40: "v" * 500}}, id="longest-key-and-value"),
        pytest.param({"priority": 10}, id="priority-10"),
        pytest.param({"priority": -10}, id="priority-minus-10"),
        pytest.param({"input": {"fail": True, "retryable": True}}, id="retryable-with-fail"),
        pytest.param(
            {
                # A closed port on this machine: the callback fails, harmlessly.
                "callback_url": "http://127.0.0.1:9/hook",
                "callback_events": ["task.completed"],
                "input": {"seconds": 300},
            },
            id="callback",
        ),
    ],
)
def test_values_at_the_limits_are_accepted(http: httpx.Client, body: dict[str, Any]) -> None:
    response = http.post("/v1/tasks", json={"workflow": "wait", **body})
    assert response.status_code == 201, response.text
    task = response.json()
    cancel_quietly(http, [task["id"]])
    for key, value in body.items():
        if key == "input":
            assert task["input"] == {**WAIT_DEFAULTS, **value}
        elif key.startswith("callback_"):
            assert task["callback"][key.removeprefix("callback_")] == value, key
        else:
            assert task[key] == value, key


# -- bad input -------------------------------------------------------------------

# (body without "workflow", status, code, param)
BAD_BODIES: list[Any] = [
    pytest.param({"input": {"seconds": -1}}, 422, "invalid_param", "input.seconds", id="seconds<0"),
    pytest.param(
        {"input": {"seconds": "abc"}}, 422, "invalid_param", "input.seconds", id="seconds-str"
    ),
    pytest.param(
        {"input": {"seconds": 3601}}, 422, "invalid_param", "input.seconds", id="seconds-big"
    ),
    pytest.param({"input": {"steps": 0}}, 422, "invalid_param", "input.steps", id="steps-0"),
    pytest.param({"input": {"bogus": 1}}, 422, "invalid_param", "input.bogus", id="input-extra"),
    pytest.param({"input": "x"}, 422, "invalid_param", "input", id="input-not-object"),
    pytest.param({"input": [1]}, 422, "invalid_param", "input", id="input-list"),
    pytest.param(
        {"input": {"retryable": True}}, 422, "invalid_param", "input", id="retryable-without-fail"
    ),
    pytest.param(
        {"input": {"credits": "0.0001"}}, 422, "invalid_param", "input.credits", id="credits"
    ),
    pytest.param(
        {"metadata": {f"k{i}": "v" for i in range(51)}},
        422,
        "invalid_param",
        "metadata",
        id="metadata-51-keys",
    ),
    pytest.param(
        {"metadata": {"k" * 41: "v"}}, 422, "invalid_param", "metadata", id="metadata-key-41"
    ),
    pytest.param({"metadata": {"": "v"}}, 422, "invalid_param", "metadata", id="metadata-key-0"),
    pytest.param(
        {"metadata": {"k": "v" * 501}}, 422, "invalid_param", "metadata", id="metadata-value-501"
    ),
    pytest.param(
        {"metadata": {"k": 1}}, 422, "invalid_param", "metadata.k", id="metadata-value-int"
    ),
    pytest.param(
        {"metadata": {"k": {"a": "b"}}}, 422, "invalid_param", "metadata.k", id="metadata-nested"
    ),
    pytest.param({"metadata": ["a"]}, 422, "invalid_param", "metadata", id="metadata-list"),
    pytest.param({"priority": 11}, 422, "invalid_param", "priority", id="priority-11"),
    pytest.param({"priority": -11}, 422, "invalid_param", "priority", id="priority-minus-11"),
    pytest.param({"priority": 1.5}, 422, "invalid_param", "priority", id="priority-float"),
    pytest.param({"priority": "high"}, 422, "invalid_param", "priority", id="priority-str"),
    pytest.param({"out_task_id": ""}, 422, "invalid_param", "out_task_id", id="out-empty"),
    pytest.param({"out_task_id": "x" * 256}, 422, "invalid_param", "out_task_id", id="out-256"),
    pytest.param({"out_task_id": "a\nb"}, 422, "invalid_param", "out_task_id", id="out-ctrl"),
    pytest.param({"out_task_id": "caf\u00e9"}, 422, "invalid_param", "out_task_id", id="out-utf"),
    pytest.param({"out_task_id": 7}, 422, "invalid_param", "out_task_id", id="out-int"),
    pytest.param({"colour": "red"}, 422, "invalid_param", "colour", id="unknown-field"),
    pytest.param(
        {"callback_url": "not a url"}, 422, "invalid_param", "callback_url", id="callback-url"
    ),
    pytest.param(
        {"callback_events": ["task.bogus"]},
        422,
        "invalid_param",
        "callback_events.0",
        id="callback-event",
    ),
]


def _assert_nothing_written(http: httpx.Client, before: list[str], body: Any) -> None:
    assert task_ids(http) == before
    out_task_id = body.get("out_task_id") if isinstance(body, dict) else None
    if isinstance(out_task_id, str) and out_task_id:
        found = http.post("/v1/tasks/query", json={"out_task_id": out_task_id})
        assert_error(found, 404, "task_not_found")


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_BODIES)
def test_bad_submission_to_v1_tasks(
    http: httpx.Client, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    before = task_ids(http)
    response = http.post("/v1/tasks", json={"workflow": "wait", **body})
    assert_error(response, status, code, param)
    _assert_nothing_written(http, before, body)


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_BODIES)
def test_bad_submission_to_named_workflow(
    http: httpx.Client, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    before = task_ids(http)
    response = http.post("/v1/workflows/wait/tasks", json=body)
    assert_error(response, status, code, param)
    _assert_nothing_written(http, before, body)


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        pytest.param({}, 422, "invalid_param", "workflow", id="missing"),
        pytest.param({"workflow": ""}, 422, "invalid_param", "workflow", id="empty"),
        pytest.param({"workflow": 5}, 422, "invalid_param", "workflow", id="int"),
        pytest.param({"workflow": "nope"}, 404, "workflow_not_found", "workflow", id="unknown"),
        pytest.param(
            {"workflow": "nope", "input": {"seconds": -1}},
            404,
            "workflow_not_found",
            "workflow",
            id="unknown-with-bad-input",
        ),
        pytest.param(
            {"workflow": "nope", "out_task_id": "unknown-wf-1"},
            404,
            "workflow_not_found",
            "workflow",
            id="unknown-with-key",
        ),
    ],
)
def test_bad_workflow_field(
    http: httpx.Client, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    before = task_ids(http)
    assert_error(http.post("/v1/tasks", json=body), status, code, param)
    _assert_nothing_written(http, before, body)


def test_unknown_workflow_in_the_path(http: httpx.Client) -> None:
    before = task_ids(http)
    response = http.post("/v1/workflows/nope/tasks", json={"out_task_id": "unknown-wf-2"})
    assert_error(response, 404, "workflow_not_found", "workflow")
    _assert_nothing_written(http, before, {"out_task_id": "unknown-wf-2"})


def test_workflow_field_in_the_body_of_a_named_workflow_submission(http: httpx.Client) -> None:
    before = task_ids(http)
    for workflow in ("wait", "probe"):
        response = http.post("/v1/workflows/wait/tasks", json={"workflow": workflow})
        assert_error(response, 422, "invalid_param", "workflow")
    _assert_nothing_written(http, before, {})


@pytest.mark.parametrize("route", ["/v1/tasks", "/v1/workflows/wait/tasks"])
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{bad", id="garbage"),
        pytest.param(b'{"workflow": "wait"', id="truncated"),
        pytest.param(b'{"workflow": "wait",}', id="trailing-comma"),
        pytest.param(b"{'workflow': 'wait'}", id="single-quotes"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
    ],
)
def test_malformed_json(http: httpx.Client, route: str, content: bytes) -> None:
    before = task_ids(http)
    response = http.post(route, content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")
    _assert_nothing_written(http, before, {})


@pytest.mark.parametrize("route", ["/v1/tasks", "/v1/workflows/wait/tasks"])
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"wait"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
    ],
)
def test_json_that_is_not_an_object(http: httpx.Client, route: str, content: bytes) -> None:
    before = task_ids(http)
    response = http.post(route, content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_param")
    _assert_nothing_written(http, before, {})


def test_malformed_json_without_a_content_type(http: httpx.Client) -> None:
    before = task_ids(http)
    response = http.post("/v1/tasks", content=b"workflow=wait")
    assert_error(response, 400, "invalid_json")
    _assert_nothing_written(http, before, {})


# -- the body limit ---------------------------------------------------------------

LIMIT = 2048
_JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory, backend, "--no-workers", env={"TASKGATE_MAX_BODY_BYTES": str(LIMIT)}
    )


def _padded(size: int, **extra: Any) -> bytes:
    """A valid submission body of exactly ``size`` bytes."""
    body = {**extra, "metadata": {"pad": ""}}
    empty = len(json.dumps(body).encode())
    body["metadata"] = {"pad": "x" * min(500, size - empty)}
    rest = size - len(json.dumps(body).encode())
    i = 0
    while rest > 0:
        key = f"p{i}"
        room = rest - len(f', "{key}": ""')
        assert room >= 0, "cannot pad to this size"
        body["metadata"][key] = "x" * min(500, room)
        rest = size - len(json.dumps(body).encode())
        i += 1
    content = json.dumps(body).encode()
    assert len(content) == size
    return content


@pytest.mark.parametrize(
    ("route", "extra"),
    [("/v1/tasks", {"workflow": "wait"}), ("/v1/workflows/wait/tasks", {})],
)
def test_body_at_the_limit_is_accepted_one_byte_more_is_not(
    small: ServerProcess, route: str, extra: dict[str, Any]
) -> None:
    with small.client() as http:
        before = task_ids(http)
        exact = http.post(route, content=_padded(LIMIT, **extra), headers=_JSON)
        assert exact.status_code == 201, exact.text
        assert task_ids(http) == [exact.json()["id"], *before]

        before = task_ids(http)
        over = _padded(LIMIT + 1, out_task_id="too-big-1", **extra)
        response = http.post(route, content=over, headers=_JSON)
        assert_error(response, 413, "body_too_large")
        _assert_nothing_written(http, before, {"out_task_id": "too-big-1"})


def test_big_body_is_refused_by_content_length(small: ServerProcess) -> None:
    with small.client() as http:
        before = task_ids(http)
        content = _padded(50_000, workflow="wait", out_task_id="too-big-2")
        response = http.post("/v1/tasks", content=content, headers=_JSON)
        assert_error(response, 413, "body_too_large")
        assert str(LIMIT) in response.json()["error"]["message"]
        _assert_nothing_written(http, before, {"out_task_id": "too-big-2"})


def test_big_chunked_body_without_content_length_is_refused(small: ServerProcess) -> None:
    content = _padded(50_000, workflow="wait", out_task_id="too-big-3")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 1000):
            yield content[start : start + 1000]

    with small.client() as http:
        before = task_ids(http)
        response = http.post("/v1/tasks", content=chunks(), headers=_JSON)
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "body_too_large")
        _assert_nothing_written(http, before, {"out_task_id": "too-big-3"})


def test_big_body_labelled_multipart_is_refused_on_a_json_route(small: ServerProcess) -> None:
    content = _padded(50_000, workflow="wait", out_task_id="too-big-4")
    with small.client() as http:
        before = task_ids(http)
        response = http.post(
            "/v1/tasks",
            content=content,
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert_error(response, 413, "body_too_large")
        _assert_nothing_written(http, before, {"out_task_id": "too-big-4"})


def test_small_server_still_serves_reads(small: ServerProcess) -> None:
    with small.client() as http:
        assert http.get("/v1/workflows").status_code == 200
        task = http.post("/v1/tasks", json={"workflow": "wait"}).json()
        assert stable(http.get(f"/v1/tasks/{task['id']}").json()) == stable(task)
