"""Shared pieces of the HTTP API acceptance tests: one error-shape check, accounts
made with the real CLI, and helpers that read the task list back to prove that a
rejected request wrote nothing.

A server's data dir names its database on either backend (``tests.helpers``
``database_url``): the helpers that reach into the database go by it."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.databases import Backend
from tests.helpers import (
    ServerProcess,
    database_url,
    postgres_url,
    run_cli,
    start_server,
    wait_until,
)

TASK_ID = re.compile(r"^task_[0-9A-HJKMNP-TV-Z]{26}$")
ACCOUNT_ID = re.compile(r"^acct_[0-9A-HJKMNP-TV-Z]{26}$")
KEY_ID = re.compile(r"key_[0-9A-HJKMNP-TV-Z]{26}")
API_KEY = re.compile(r"^tg_live_[A-Za-z0-9]{38}$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TERMINAL = frozenset({"completed", "failed", "cancelled"})

_ERROR_FIELDS = frozenset({"code", "message", "param", "details", "request_id"})
_UNSET: Any = object()


def assert_error(
    response: httpx.Response, status: int, code: str, param: Any = _UNSET
) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message", "param"?, "details"?,
    "request_id"}}``, its request id the one in the ``X-Request-Id`` header.

    With ``param`` given (``None`` included), the error's ``param`` must equal it.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "request_id"} <= set(error) <= _ERROR_FIELDS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert error["request_id"] == response.headers["x-request-id"], (error, response.headers)
    if "param" in error:
        assert isinstance(error["param"], str) and error["param"], error
    if "details" in error:
        assert isinstance(error["details"], dict), error
    if param is not _UNSET:
        assert error.get("param") == param, error
    assert isinstance(error, dict)
    return error


def parse_time(value: str) -> datetime:
    assert ISO_UTC.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    key: str


def create_account(
    server: ServerProcess, prefix: str = "acct", *, concurrency: int = 4, credits: str = "100"
) -> Account:
    """A fresh account and key, made with the real CLI against the server's data dir."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    made = run_cli(
        server.data_dir,
        "accounts",
        "create",
        name,
        "--credits",
        credits,
        "--concurrency",
        str(concurrency),
    )
    account_id = made.stdout.strip()
    assert ACCOUNT_ID.match(account_id), made.stdout
    key = run_cli(server.data_dir, "keys", "create", account_id).stdout.strip()
    assert API_KEY.match(key), key
    return Account(account_id, name, key)


def module_server(
    tmp_path_factory: pytest.TempPathFactory,
    backend: Backend,
    *args: str,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Body of a module-scoped server fixture: a server on a database of its own."""
    with backend.bound(tmp_path_factory.mktemp("srv") / "data") as data_dir:
        proc = start_server(data_dir, *args, env=env)
        try:
            yield proc
        finally:
            proc.stop()


def list_all(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every task the list returns, walking the cursor to the end."""
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {"limit": 100, **params}
        if cursor:
            query["cursor"] = cursor
        page = http.get("/v1/tasks", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        found.extend(body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None, body
            return found
        cursor = body["next_cursor"]
    raise AssertionError("the list never ended")


def task_ids(http: httpx.Client, **params: Any) -> list[str]:
    return [task["id"] for task in list_all(http, **params)]


def no_token(task: dict[str, Any]) -> dict[str, Any]:
    """A task object with ``links.events`` stripped of its stream token.

    ``GET /v1/tasks/{id}`` signs a token into ``links.events`` (it changes with the
    signing period); the task objects in events carry the bare URL.
    """
    links = dict(task["links"])
    if "events" in links:
        links["events"] = links["events"].split("?", 1)[0]
    return {**task, "links": links}


def stable(task: dict[str, Any]) -> dict[str, Any]:
    """A task without the fields derived at read time (queue place, ETA, stream token)."""
    return {
        key: value
        for key, value in no_token(task).items()
        if key not in ("queue_position", "estimated_seconds", "estimated_completion")
    }


def submit(
    http: httpx.Client, workflow: str = "wait", status: int = 201, **body: Any
) -> dict[str, Any]:
    response = http.post("/v1/tasks", json={"workflow": workflow, **body})
    assert response.status_code == status, response.text
    task: dict[str, Any] = response.json()
    return task


def wait_status(
    http: httpx.Client, task_id: str, statuses: Iterable[str], timeout: float = 20
) -> dict[str, Any]:
    wanted = frozenset(statuses)

    def reached() -> dict[str, Any] | None:
        response = http.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task if task["status"] in wanted else None

    found: dict[str, Any] = wait_until(
        reached, timeout=timeout, interval=0.02, message=f"{task_id} to be {sorted(wanted)}"
    )
    return found


def cancel_while_rendering(
    http: httpx.Client, data_dir: Path, task_id: str, *, past_percent: float
) -> dict[str, Any]:
    """Cancel a media task once it renders past ``past_percent``, and check what
    every media workflow promises: cancelled within 2 s, no output, and no file
    of the task left in the blobs or the scratch space. Returns the task."""

    def rendering() -> bool:
        current = http.get(f"/v1/tasks/{task_id}")
        assert current.status_code == 200, current.text
        task = current.json()
        assert task["status"] in {"queued", "running"}, task
        progress = task.get("progress") or {}
        return (
            progress.get("stage") == "rendering" and (progress.get("percent") or 0) > past_percent
        )

    wait_until(rendering, timeout=60, interval=0.05, message=f"{task_id} to be rendering")
    asked = time.monotonic()
    assert http.post(f"/v1/tasks/{task_id}/cancel").status_code == 202
    done = wait_status(http, task_id, TERMINAL, timeout=10)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled", done
    assert took < 2.0, took
    assert done["output"] == []
    leftovers = [
        path
        for root in ("blobs", "work")
        for path in (data_dir / root).rglob("*")
        if task_id in str(path) and path.is_file()
    ]
    assert leftovers == []
    return done


def cancel_quietly(http: httpx.Client, task_ids_: Iterable[str]) -> None:
    """Frees worker slots at the end of a test; errors do not matter here."""
    for task_id in task_ids_:
        http.post(f"/v1/tasks/{task_id}/cancel")


def data_files(data_dir: Path) -> list[Path]:
    """The SQLite database and its WAL and shared-memory files."""
    return sorted(data_dir.glob("taskgate.db*"))


def quick_account(
    data_dir: Path, prefix: str = "acct", *, concurrency: int = 4, credits: str = "100"
) -> Account:
    """A fresh account and key, made in this process through the services against the
    data dir (the CLI spends ~2 s importing per call; use :func:`create_account` where
    the CLI itself is under test)."""
    from taskgate.services.accounts import AccountService
    from taskgate.store.db import Database

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    db = Database(database_url(data_dir), pool_size=1)
    try:
        service = AccountService(db)
        account = service.create_account(name, credits=credits, concurrency=concurrency)
        key = service.create_key(account.id)[1]
    finally:
        db.close()
    return Account(account.id, name, key)


def sql(data_dir: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement on the data dir's database with the driver itself (sqlite3 or
    psycopg, not taskgate's code) and commit; returns the rows it gave. Parameters
    are ``?`` on both."""
    return sql_many(data_dir, query, [params])


def sql_many(
    data_dir: Path, query: str, rows: Iterable[tuple[object, ...]]
) -> list[tuple[Any, ...]]:
    """:func:`sql` once per row of parameters, in one transaction; the last one's rows."""
    url = postgres_url(data_dir)
    found: list[tuple[Any, ...]] = []
    if url is None:
        path = data_dir / "taskgate.db"
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn, conn:
            for params in rows:
                found = conn.execute(query, params).fetchall()
        return found
    libpq_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq_url) as pg, pg.cursor() as cursor:
        for params in rows:
            cursor.execute(query.replace("?", "%s"), params)
            found = cursor.fetchall() if cursor.description is not None else []
    return found


def ledger_of_task(data_dir: Path, task_id: str) -> list[tuple[str, int]]:
    """A task's ledger entries as (kind, millicredits), oldest first."""
    rows = sql(data_dir, "SELECT kind, amount FROM ledger WHERE task_id = ? ORDER BY id", task_id)
    return [(str(kind), int(amount)) for kind, amount in rows]


def get_usage(http: httpx.Client) -> dict[str, Any]:
    """``GET /v1/usage`` of the client's account."""
    response = http.get("/v1/usage")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def json_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """A JSON response's body, after checking its status and content type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    return body


def send(
    client: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request with a JSON body, or none."""
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, json=body, headers=headers)


def send_raw(client: httpx.Client, method: str, path: str, content: bytes) -> httpx.Response:
    """A request whose body is sent as given, labelled JSON (for malformed JSON)."""
    return client.request(
        method, path, content=content, headers={"Content-Type": "application/json"}
    )


def upload(http: httpx.Client, data: bytes, name: str = "in.png") -> str:
    """Upload ``data`` as an input file; its id."""
    response = http.post("/v1/files", files={"file": (name, data)}, data={"purpose": "input"})
    file_id: str = json_of(response, 201)["id"]
    return file_id
