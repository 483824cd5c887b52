"""taskgate on PostgreSQL, as an operator starts it: ``migrate`` first (``serve``
and ``worker`` refuse an out-of-date schema and say what to run), then a task
submitted over HTTP runs to the end; and an API process with four worker
processes of four slots each keeps every account under its concurrency limit."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from taskgate.store import migrate
from taskgate.store.db import Database
from taskgate.store.tables import events, tasks
from tests.acceptance.test_fair_concurrency import max_overlap
from tests.acceptance.worker_support import submit
from tests.databases import PostgresServer
from tests.helpers import (
    ServerProcess,
    free_port,
    run_cli,
    start_server,
    wait_until,
)
from tests.helpers import test_env as process_env

pytestmark = pytest.mark.acceptance

#: Account name, concurrency limit, tasks submitted.
ACCOUNTS = (("one", 1, 6), ("two", 2, 8), ("three", 3, 9))


@pytest.fixture
def empty_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A new PostgreSQL database that no migration has touched."""
    url = postgres_server.create(migrated=False)
    try:
        yield url
    finally:
        postgres_server.drop(url)


def test_serve_and_worker_refuse_an_unmigrated_database(
    tmp_path: Path, empty_database: str
) -> None:
    data_dir = tmp_path / "data"
    for command in (["worker"], ["serve", "--port", str(free_port())]):
        refused = run_cli(data_dir, *command, check=False, TASKGATE_DATABASE_URL=empty_database)
        assert refused.returncode != 0, command
        assert "run `taskgate migrate`" in refused.stderr + refused.stdout, command
    done = run_cli(data_dir, "migrate", TASKGATE_DATABASE_URL=empty_database)
    assert f"revision {migrate.head_revision()}" in done.stdout
    db = Database(empty_database, pool_size=1)
    try:
        assert migrate.is_up_to_date(db)
    finally:
        db.close()


def test_a_task_submitted_over_http_runs_on_postgresql(tmp_path: Path, empty_database: str) -> None:
    env = {"TASKGATE_DATABASE_URL": empty_database}
    data_dir = tmp_path / "data"
    run_cli(data_dir, "migrate", TASKGATE_DATABASE_URL=empty_database)
    server = start_server(data_dir, env=env)
    try:
        with server.client() as http:
            created = http.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0.1}})
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]

            def done() -> dict[str, Any] | None:
                body: dict[str, Any] = http.get(f"/v1/tasks/{task_id}").json()
                return body if body["status"] == "completed" else None

            final = wait_until(done, timeout=20, message="the task to complete")
            assert final["output"] == [{"waited_seconds": 0.1, "steps": 1}]
    finally:
        assert server.stop() == 0, server.log()
    db = Database(empty_database, pool_size=1)
    try:
        rows = db.read_sync(
            lambda conn: conn.execute(
                select(events.c.type, events.c.position)
                .where(events.c.task_id == task_id)
                .order_by(events.c.seq)
            ).all()
        )
    finally:
        db.close()
    assert rows[0].type == "task.created"
    assert rows[-1].type == "task.completed"
    positions = [row.position for row in rows]
    assert all(p is not None for p in positions) and positions == sorted(positions)


def test_four_worker_processes_keep_every_account_under_its_limit(
    tmp_path: Path, empty_database: str
) -> None:
    """16 slots in 4 ``taskgate worker`` processes claim at once from one database:
    the handlers' own records of when they ran never overlap past an account's
    limit, and every task runs exactly once."""
    pg = empty_database
    data_dir = tmp_path / "data"
    run_cli(data_dir, "migrate", TASKGATE_DATABASE_URL=pg)
    records = {name: tmp_path / "records" / name for name, _, _ in ACCOUNTS}
    submitted: dict[str, list[str]] = {}
    # The workers first: they start (slowly: imports) while the accounts are made.
    workers: list[subprocess.Popen[bytes]] = []
    api: ServerProcess | None = None
    try:
        for i in range(4):
            with (tmp_path / f"worker-{i}.log").open("w") as log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "taskgate", "worker", "--workers", "4"],
                        env=process_env(data_dir, TASKGATE_DATABASE_URL=pg),
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        keys = _account_keys(data_dir, pg)
        api = start_server(data_dir, "--no-workers", env={"TASKGATE_DATABASE_URL": pg})
        for name, _, count in ACCOUNTS:
            records[name].mkdir(parents=True)
            with api.client(keys[name]) as http:
                probe = {"seconds": 0.3, "record_dir": str(records[name])}
                submitted[name] = [submit(http, "probe", probe) for _ in range(count)]
        rows = _wait_all_ended(pg, sum(len(ids) for ids in submitted.values()))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
        if api is not None:
            api.stop()
    assert {row.status for row in rows} == {"completed"}
    assert len({row.worker_id for row in rows}) > 1, "one worker process did all the work"
    overlaps = {}
    for name, limit, _ in ACCOUNTS:
        held = {}
        for path in records[name].iterdir():
            entered, left, _pid = path.read_text().split()
            held[path.name] = (float(entered), float(left))
        assert sorted(held) == sorted(f"{task_id}-1" for task_id in submitted[name])
        overlaps[name] = max_overlap(list(held.values()))
        assert overlaps[name] <= limit, overlaps
    assert overlaps["three"] >= 2, overlaps  # the slots did contend for the limits


def _account_keys(data_dir: Path, url: str) -> dict[str, str]:
    """The accounts, made with the CLI side by side (each run spends most of its
    second importing), and a key of each."""

    def make(name: str, limit: int) -> str:
        run_cli(
            data_dir,
            "accounts",
            "create",
            name,
            "--concurrency",
            str(limit),
            TASKGATE_DATABASE_URL=url,
        )
        out = run_cli(data_dir, "keys", "create", name, TASKGATE_DATABASE_URL=url).stdout
        return out.split()[-1]

    with ThreadPoolExecutor(len(ACCOUNTS)) as pool:
        made = pool.map(lambda account: make(account[0], account[1]), ACCOUNTS)
        return dict(zip((name for name, _, _ in ACCOUNTS), made, strict=True))


def _wait_all_ended(url: str, count: int) -> Any:
    """Once ``count`` tasks exist and all have ended: their ids, statuses and workers."""
    db = Database(url, pool_size=1)
    try:

        def ended() -> Any:
            rows = db.read_sync(
                lambda conn: conn.execute(
                    select(tasks.c.id, tasks.c.status, tasks.c.worker_id)
                ).all()
            )
            done = all(row.status in ("completed", "failed", "cancelled") for row in rows)
            return rows if done and len(rows) == count else None

        return wait_until(ended, timeout=60, interval=0.1, message="every task to end")
    finally:
        db.close()
