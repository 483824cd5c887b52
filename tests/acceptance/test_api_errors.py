"""The error edge over real HTTP: unknown routes, wrong methods, request ids on
every response (errors included), and the operations endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    Account,
    assert_error,
    create_account,
    module_server,
    task_ids,
)
from tests.databases import Backend
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory, backend, "--no-workers", env={"TASKGATE_MAX_BODY_BYTES": "4096"}
    )


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "errors")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


@pytest.fixture(scope="module")
def task(srv: ServerProcess, acct: Account) -> dict[str, Any]:
    with srv.client(acct.key) as http:
        response = http.post("/v1/tasks", json={"workflow": "wait"})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v1"),
        ("GET", "/v1/"),
        ("GET", "/v1/nope"),
        ("POST", "/v1/nope"),
        ("GET", "/v1/tasks/x/y"),
        ("GET", "/v2/tasks"),
        ("DELETE", "/v1/nope/1"),
    ],
)
@pytest.mark.parametrize("authed", [True, False], ids=["with-key", "without-key"])
def test_unknown_route(
    srv: ServerProcess, acct: Account, method: str, path: str, authed: bool
) -> None:
    with srv.client(acct.key if authed else "") as http:
        assert_error(http.request(method, path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/tasks", {"GET", "POST"}),
        ("DELETE", "/v1/tasks", {"GET", "POST"}),
        ("PATCH", "/v1/tasks/{id}", {"GET", "DELETE"}),
        ("PUT", "/v1/tasks/{id}", {"GET", "DELETE"}),
        ("GET", "/v1/tasks/{id}/cancel", {"POST"}),
        ("DELETE", "/v1/tasks/{id}/cancel", {"POST"}),
        ("DELETE", "/v1/workflows", {"GET"}),
        ("POST", "/v1/workflows", {"GET"}),
        ("PUT", "/v1/workflows/wait", {"GET"}),
        ("GET", "/v1/workflows/wait/tasks", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
def test_wrong_method(
    http: httpx.Client, task: dict[str, Any], method: str, path: str, allowed: set[str]
) -> None:
    before = task_ids(http)
    response = http.request(method, path.format(id=task["id"]), json={"workflow": "wait"})
    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= allowed
    assert task_ids(http) == before
    assert http.get(f"/v1/tasks/{task['id']}").json()["status"] == "queued"


def _requests(task_id: str) -> list[Any]:
    """(method, path, json body or raw bytes, expected status) for many kinds of answer."""
    return [
        ("GET", "/healthz", None, 200),
        ("GET", "/v1/tasks", None, 200),
        ("GET", f"/v1/tasks/{task_id}", None, 200),
        ("POST", "/v1/tasks", {"workflow": "wait"}, 201),
        ("POST", "/v1/tasks", b"{nope", 400),
        ("GET", "/v1/tasks?limit=0", None, 400),
        ("POST", "/v1/tasks", {"workflow": "wait", "priority": 99}, 422),
        ("GET", "/v1/tasks/task_01J0000000000000000000000Z", None, 404),
        ("GET", "/nope", None, 404),
        ("PUT", "/v1/tasks", None, 405),
        ("POST", "/v1/tasks", b"{" + b" " * 5000 + b"}", 413),
        ("POST", f"/v1/tasks/{task_id}/cancel", None, 200),
        ("POST", f"/v1/tasks/{task_id}/cancel", None, 200),
    ]


def _send(http: httpx.Client, method: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return http.request(method, path, content=body, **kw)
    if body is not None:
        return http.request(method, path, json=body, **kw)
    return http.request(method, path, **kw)


def test_every_response_carries_a_fresh_request_id(srv: ServerProcess, acct: Account) -> None:
    with srv.client(acct.key) as http:
        task_id = http.post("/v1/tasks", json={"workflow": "wait"}).json()["id"]
        seen = set()
        for method, path, body, status in _requests(task_id):
            response = _send(http, method, path, body)
            assert response.status_code == status, (path, response.text)
            rid = response.headers["x-request-id"]
            assert rid.startswith("req_") and len(rid) > 10, rid
            seen.add(rid)
            if status >= 400:
                assert response.json()["error"]["request_id"] == rid
        assert len(seen) == len(_requests(task_id))
    with httpx.Client(base_url=srv.base_url) as anonymous:
        response = anonymous.get("/v1/tasks")
        err = assert_error(response, 401, "invalid_api_key")
        assert err["request_id"].startswith("req_")


def test_a_client_request_id_is_echoed(srv: ServerProcess, acct: Account) -> None:
    with srv.client(acct.key) as http:
        task_id = http.post("/v1/tasks", json={"workflow": "wait"}).json()["id"]
        for i, (method, path, body, status) in enumerate(_requests(task_id)):
            mine = f"client-{i}.trace:abc_{i}"
            response = _send(http, method, path, body, headers={"X-Request-Id": mine})
            assert response.status_code == status, (path, response.text)
            assert response.headers["x-request-id"] == mine
            if status >= 400:
                assert response.json()["error"]["request_id"] == mine
    with httpx.Client(base_url=srv.base_url, headers={"X-Request-Id": "anon-1"}) as anonymous:
        assert_error(anonymous.get("/v1/tasks"), 401, "invalid_api_key")
        assert anonymous.get("/v1/tasks").headers["x-request-id"] == "anon-1"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("has space", id="space"),
        pytest.param("x" * 129, id="too-long"),
        pytest.param("semi;colon", id="semicolon"),
        pytest.param("<script>", id="markup"),
    ],
)
def test_an_unusable_client_request_id_is_replaced(http: httpx.Client, value: str) -> None:
    for response in (
        http.get("/v1/tasks", headers={"X-Request-Id": value}),
        http.get("/nope", headers={"X-Request-Id": value}),
    ):
        rid = response.headers["x-request-id"]
        assert rid != value and rid.startswith("req_")
        assert value not in response.text


def test_the_longest_request_id_is_kept(http: httpx.Client) -> None:
    value = "r" * 128
    assert http.get("/v1/tasks", headers={"X-Request-Id": value}).headers["x-request-id"] == value


def test_operations_endpoints(srv: ServerProcess) -> None:
    with httpx.Client(base_url=srv.base_url) as http:
        health = http.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        schema = http.get("/openapi.json")
        assert schema.status_code == 200
        paths = schema.json()["paths"]
        for path in (
            "/v1/tasks",
            "/v1/tasks/{task_id}",
            "/v1/tasks/query",
            "/v1/tasks/{task_id}/cancel",
            "/v1/workflows",
            "/v1/workflows/{name}",
            "/v1/workflows/{name}/tasks",
        ):
            assert path in paths, path
        assert http.get("/docs").status_code == 200
        for response in (health, ready, metrics, schema):
            assert response.headers["x-request-id"].startswith("req_")
