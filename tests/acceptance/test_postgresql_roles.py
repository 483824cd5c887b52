"""The roles of a deployment's processes: one maintenance leader among the nodes
(taken over when it dies), the shared secret key nodes refuse to start without on
PostgreSQL, no ``default`` account made by ``serve`` on PostgreSQL, and the
connections a ``serve`` and ``worker`` pair takes from the server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from taskgate.composition import build
from taskgate.payloads import WorkflowSubmit
from taskgate.services.maintenance import MAINTENANCE
from taskgate.store import leader, migrate
from taskgate.store.postgres import normalise_url
from taskgate.store.tables import accounts, leader_leases, tasks
from tests.acceptance.worker_support import (
    WorkerProcess,
    database,
    descendants,
    stored_task,
    submit,
)
from tests.conftest import fast_settings
from tests.databases import PostgresServer
from tests.helpers import (
    forget,
    free_port,
    postgres_url,
    run_cli,
    start_server,
    use_postgres,
    wait_until,
)
from tests.helpers import test_env as process_env

pytestmark = pytest.mark.acceptance

LEASE_SECONDS = 2.0  # TASKGATE_LEASE_SECONDS of test processes (tests.helpers.test_env)


@pytest.fixture
def pg_data_dir(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Path]:
    """A data dir bound to a fresh migrated PostgreSQL database of its own."""
    url = postgres_server.create()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    use_postgres(data_dir, url)
    try:
        yield data_dir
    finally:
        forget(data_dir)
        postgres_server.drop(url)


def _pg_url(data_dir: Path) -> str:
    url = postgres_url(data_dir)
    assert url is not None
    return url


def _leader(data_dir: Path) -> leader.Term | None:
    with database(data_dir) as db:
        return db.read_sync(lambda conn: leader.current(conn, MAINTENANCE))


def _pid_of(term: leader.Term) -> int:
    return int(term.holder.split("/")[1])


# -- the maintenance leader ------------------------------------------------------


def test_one_worker_leads_maintenance_and_another_takes_over_when_it_is_killed(
    data_dir: Path,
) -> None:
    """Two ``taskgate worker`` processes, one slot each, both running a task: one
    holds the maintenance lease and keeps it; SIGKILL it (and its executor) and the
    other is elected within a lease and a renewal period, in the next term, and
    recovers the task the dead worker was running."""
    settings = fast_settings(data_dir, database_url=postgres_url(data_dir))
    services = build(settings)
    migrate.upgrade(services.db)
    first, second = WorkerProcess(data_dir), WorkerProcess(data_dir)
    try:
        first.wait_ready()
        second.wait_ready()
        account = services.accounts.create_account("acme", credits="100")
        for _ in range(2):
            asyncio.run(
                services.tasks.submit(
                    account.id, "stubborn", WorkflowSubmit(input={"seconds": 60}), None
                )
            )

        def both_running() -> list[tuple[str, str]] | None:
            rows = services.db.read_sync(
                lambda conn: conn.execute(
                    select(tasks.c.id, tasks.c.worker_id).where(tasks.c.status == "running")
                ).all()
            )
            return [(row.id, row.worker_id) for row in rows] if len(rows) == 2 else None

        running = wait_until(both_running, timeout=20, message="a task on each worker")
        term = wait_until(lambda: _leader(data_dir), timeout=10, message="a leader")
        by_pid = {first.pid: first, second.pid: second}
        assert _pid_of(term) in by_pid
        dead = by_pid[_pid_of(term)]
        survivor = second if dead is first else first
        # The leader keeps its lease (and term) across renewals.
        stay = time.monotonic() + 2 * LEASE_SECONDS
        wait_until(lambda: time.monotonic() > stay, timeout=10, interval=0.1)
        held = _leader(data_dir)
        assert held is not None and (held.holder, held.term) == (term.holder, term.term)

        dead_worker = _worker_id(dead.log())
        (lost_task,) = [task_id for task_id, worker in running if worker == dead_worker]
        for pid in [dead.pid, *descendants(dead.pid)]:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()

        def successor() -> leader.Term | None:
            now = _leader(data_dir)
            return now if now is not None and now.holder != term.holder else None

        new = wait_until(successor, timeout=15, interval=0.05, message="a new leader")
        assert _pid_of(new) == survivor.pid
        assert new.term == term.term + 1
        # Elected once the dead leader's lease ran out, at the survivor's next try.
        took = new.elected_at / 1e6 - killed_at
        assert took < 2 * LEASE_SECONDS + 1.0, took

        def recovered() -> dict[str, Any] | None:
            row = stored_task(data_dir, lost_task)
            return row if row["status"] != "running" else None

        row = wait_until(recovered, timeout=10, message="the lost task to be recovered")
        assert row["status"] == "queued"
        assert row["error"]["code"] == "worker_lost"
        assert "maintenance leader" in survivor.log()
    finally:
        for worker in (first, second):
            worker.stop()
        services.close()


def _worker_id(log: str) -> str:
    """The worker id a ``taskgate worker`` logged at start."""
    for line in log.splitlines():
        if "worker wrk_" in line and "started" in line:
            return "wrk_" + line.split("worker wrk_", 1)[1].split(":", 1)[0].split()[0]
    raise AssertionError(f"no start line in:\n{log}")


# -- the secret key and accounts on PostgreSQL -----------------------------------


@pytest.mark.parametrize(
    "command",
    [["worker"], ["serve", "--no-workers"], ["serve"]],
    ids=["worker", "serve-no-workers", "serve"],
)
def test_nodes_refuse_to_start_on_postgresql_without_the_secret_key(
    pg_data_dir: Path, command: list[str]
) -> None:
    args = [*command, "--port", str(free_port())] if command[0] == "serve" else command
    refused = run_cli(pg_data_dir, *args, check=False, TASKGATE_SECRET_KEY="  ")
    assert refused.returncode != 0
    assert "TASKGATE_SECRET_KEY is required with PostgreSQL" in refused.stderr
    # Nothing started: no account made, no lease campaigned for, no key file written.
    with database(pg_data_dir) as db:
        counts = db.read_sync(
            lambda conn: (
                conn.execute(select(func.count()).select_from(accounts)).scalar_one(),
                conn.execute(select(func.count()).select_from(leader_leases)).scalar_one(),
            )
        )
    assert counts == (0, 0)
    assert not (pg_data_dir / "secret_key").exists()


def test_serve_on_postgresql_makes_no_default_account(pg_data_dir: Path) -> None:
    """``serve`` prints no key and makes no account; the operator makes them with the
    CLI, and that key works."""
    port = free_port()
    log_path = pg_data_dir.parent / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskgate", "serve", "--port", str(port), "--no-workers"],
            env=process_env(pg_data_dir),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, interval=0.05, message="serve to be ready")
        with database(pg_data_dir) as db:
            count = db.read_sync(
                lambda conn: conn.execute(select(func.count()).select_from(accounts)).scalar_one()
            )
        assert count == 0
        run_cli(pg_data_dir, "accounts", "create", "studio", "--credits", "10")
        key = run_cli(pg_data_dir, "keys", "create", "studio").stdout.split()[-1]
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as http:
            assert http.get("/v1/usage").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, log_path.read_text()
    assert "tg_live_" not in out and "default" not in out


# -- connections -----------------------------------------------------------------


@contextmanager
def _admin(server: PostgresServer) -> Iterator[object]:
    engine = create_engine(
        make_url(normalise_url(server.url_of("postgres"))),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def test_a_serve_and_its_worker_stay_within_their_connection_budget(
    pg_data_dir: Path, postgres_server: PostgresServer
) -> None:
    """Each process takes at most ``DB_POOL_SIZE`` connections plus one for
    wake-ups: ``serve`` with worker slots is two processes (the API and its
    worker), so with a pool of 3 at most 8, however hard the API is pushed."""
    pool_size = 3
    budget = 2 * (pool_size + 1)
    name = make_url(_pg_url(pg_data_dir)).database
    server = start_server(pg_data_dir, env={"TASKGATE_DB_POOL_SIZE": str(pool_size)})
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        with _admin(postgres_server) as conn:
            while not stop.is_set():
                count = conn.execute(  # type: ignore[attr-defined]
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                ).scalar_one()
                peak = max(peak, count)
                stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with server.client(limits=httpx.Limits(max_connections=24)) as http:
            ids = [submit(http, "wait", {"seconds": 0.05}) for _ in range(4)]

            def hammer(i: int) -> int:
                if i % 3 == 0:
                    body = {"workflow": "wait", "input": {"seconds": 0}}
                    return http.post("/v1/tasks", json=body).status_code
                return http.get(f"/v1/tasks/{ids[i % len(ids)]}").status_code

            with ThreadPoolExecutor(24) as pool:
                statuses = list(pool.map(hammer, range(150)))
            assert set(statuses) <= {200, 201}, sorted(set(statuses))

            def all_done() -> bool:
                body = http.get("/v1/tasks", params={"status": "queued,running"}).json()
                return not body["data"]

            wait_until(all_done, timeout=60, interval=0.1, message="the queue to drain")
    finally:
        stop.set()
        sampler.join()
        assert server.stop() == 0, server.log()
    assert 2 <= peak <= budget, (peak, budget)
