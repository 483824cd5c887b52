"""API keys over real HTTP: every ``/v1`` route refuses a missing, malformed,
unknown or revoked key with 401 and writes nothing; another account's task is a
404, never a 403."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskgate.services.accounts import generate_key
from tests.acceptance.apitools import (
    KEY_ID,
    Account,
    assert_error,
    create_account,
    module_server,
    stable,
    submit,
    task_ids,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, run_cli

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    # No workers: the tasks the routes point at stay exactly as they were made.
    yield from module_server(tmp_path_factory, backend, "--no-workers")


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "auth")


@pytest.fixture(scope="module")
def targets(srv: ServerProcess, acct: Account) -> dict[str, dict[str, Any]]:
    """A queued task (to cancel) and a cancelled one (to delete)."""
    with srv.client(acct.key) as http:
        queued = submit(http, out_task_id="auth-queued")
        cancelled = submit(http, out_task_id="auth-cancelled")
        response = http.post(f"/v1/tasks/{cancelled['id']}/cancel")
        assert response.status_code == 200, response.text
        return {"queued": queued, "cancelled": response.json()}


def _routes(targets: dict[str, dict[str, Any]]) -> list[tuple[str, str, Any]]:
    queued, cancelled = targets["queued"]["id"], targets["cancelled"]["id"]
    return [
        ("GET", "/v1/workflows", None),
        ("GET", "/v1/workflows/wait", None),
        ("POST", "/v1/tasks", {"workflow": "wait", "out_task_id": "auth-new-1"}),
        ("POST", "/v1/workflows/wait/tasks", {"out_task_id": "auth-new-2"}),
        ("GET", "/v1/tasks", None),
        ("GET", f"/v1/tasks/{queued}", None),
        ("POST", "/v1/tasks/query", {"task_id": queued}),
        ("POST", "/v1/tasks/query", {"out_task_id": "auth-queued"}),
        ("POST", f"/v1/tasks/{queued}/cancel", None),
        ("DELETE", f"/v1/tasks/{cancelled}", None),
        ("GET", "/v1/usage", None),
        ("GET", "/v1/webhooks", None),
        # A terminal task's stream: its snapshot, then the end.
        ("GET", f"/v1/tasks/{cancelled}/events", None),
    ]


def _call(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    return http.request(method, path, json=body) if body is not None else http.request(method, path)


def _unchanged(srv: ServerProcess, acct: Account, targets: dict[str, dict[str, Any]]) -> None:
    with srv.client(acct.key) as http:
        assert sorted(task_ids(http)) == sorted(t["id"] for t in targets.values())
        for task in targets.values():
            assert stable(http.get(f"/v1/tasks/{task['id']}").json()) == stable(task)


def _mangled(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


BAD_HEADERS: list[Any] = [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("Bearer", id="scheme-only"),
    pytest.param("Bearer tg_live_short", id="too-short"),
    pytest.param("Bearer not-a-key-at-all", id="garbage"),
    pytest.param("Bearer {mangled}", id="bad-checksum"),
    pytest.param("Bearer {key}x", id="too-long"),
    pytest.param("Bearer tg_test_{body}", id="other-prefix"),
    pytest.param("{key}", id="no-scheme"),
    pytest.param("Token {key}", id="token-scheme"),
    pytest.param("Basic {basic}", id="basic-scheme"),
    pytest.param("Bearer {unknown}", id="well-formed-unknown"),
]


def _header(template: str | None, key: str) -> dict[str, str]:
    if template is None:
        return {}
    value = template.format(
        key=key,
        mangled=_mangled(key),
        body=key.removeprefix("tg_live_"),
        basic=base64.b64encode(f"{key}:".encode()).decode(),
        unknown=generate_key(),
    )
    return {"Authorization": value}


@pytest.mark.parametrize("template", BAD_HEADERS)
def test_bad_credentials_are_refused_on_every_route(
    srv: ServerProcess, acct: Account, targets: dict[str, dict[str, Any]], template: str | None
) -> None:
    with httpx.Client(base_url=srv.base_url, headers=_header(template, acct.key)) as http:
        for method, path, body in _routes(targets):
            response = _call(http, method, path, body)
            assert_error(response, 401, "invalid_api_key")
    _unchanged(srv, acct, targets)


def test_the_good_key_works_on_every_route_and_the_scheme_is_case_blind(
    srv: ServerProcess, acct: Account, targets: dict[str, dict[str, Any]]
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {acct.key}"}
        with httpx.Client(base_url=srv.base_url, headers=headers) as http:
            # Reads only, so the targets stay as they are for the other tests.
            for method, path, body in _routes(targets):
                if method == "GET" or path == "/v1/tasks/query":
                    response = _call(http, method, path, body)
                    assert response.status_code == 200, (scheme, path, response.text)


def test_revoked_keys_are_refused(srv: ServerProcess) -> None:
    account = create_account(srv, "revoked")
    by_prefix = run_cli(srv.data_dir, "keys", "create", account.name).stdout.strip()
    spare = run_cli(srv.data_dir, "keys", "create", account.id).stdout.strip()
    listing = run_cli(srv.data_dir, "keys", "list", account.id).stdout
    key_ids = KEY_ID.findall(listing)
    assert len(key_ids) == 3, listing
    with srv.client(account.key) as http:
        task = submit(http, out_task_id="before-revoke")
        assert http.get(f"/v1/tasks/{task['id']}").status_code == 200
    row = next(line for line in listing.splitlines() if account.key[:16] in line)
    first_id = KEY_ID.search(row)
    assert first_id is not None, listing

    run_cli(srv.data_dir, "keys", "revoke", first_id.group())
    run_cli(srv.data_dir, "keys", "revoke", by_prefix[:16])

    for key in (account.key, by_prefix):
        with srv.client(key) as http:
            assert_error(http.get(f"/v1/tasks/{task['id']}"), 401, "invalid_api_key")
            assert_error(http.get("/v1/tasks"), 401, "invalid_api_key")
            refused = http.post("/v1/tasks", json={"workflow": "wait", "out_task_id": "after"})
            assert_error(refused, 401, "invalid_api_key")
            assert_error(http.post(f"/v1/tasks/{task['id']}/cancel"), 401, "invalid_api_key")
    with srv.client(spare) as http:
        assert task_ids(http) == [task["id"]]
        assert http.get(f"/v1/tasks/{task['id']}").json()["status"] == "queued"


def test_another_accounts_task_is_not_found(
    srv: ServerProcess, acct: Account, targets: dict[str, dict[str, Any]]
) -> None:
    stranger = create_account(srv, "stranger")
    queued, cancelled = targets["queued"], targets["cancelled"]
    with srv.client(stranger.key) as them:
        assert_error(them.get(f"/v1/tasks/{queued['id']}"), 404, "task_not_found")
        for body in ({"task_id": queued["id"]}, {"out_task_id": "auth-queued"}):
            assert_error(them.post("/v1/tasks/query", json=body), 404, "task_not_found")
        assert_error(them.post(f"/v1/tasks/{queued['id']}/cancel"), 404, "task_not_found")
        assert_error(them.delete(f"/v1/tasks/{cancelled['id']}"), 404, "task_not_found")
        assert task_ids(them) == []
        # The same out_task_id is free in the other account.
        own = them.post("/v1/tasks", json={"workflow": "wait", "out_task_id": "auth-queued"})
        assert own.status_code == 201, own.text
        assert own.json()["id"] != queued["id"]
        cancelled_own = them.post(f"/v1/tasks/{own.json()['id']}/cancel")
        assert cancelled_own.status_code == 200
    _unchanged(srv, acct, targets)
