"""A PostgreSQL outage under a running ``serve`` (API and worker processes).

The server is shared with other tests, so the outage is of this test's database
only: connections to it are refused (``ALLOW_CONNECTIONS false``) and the ones
open are ended (``pg_terminate_backend``), as a restart would end them. While it
lasts the API answers 503 ``unavailable`` promptly and writes nothing; afterwards
the first request succeeds, the task that was running and one submitted after
both complete, the event stream opened before the outage sees the end, and the
credits check out.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from taskgate.store.postgres import normalise_url
from taskgate.store.tables import tasks
from tests.acceptance.worker_support import database, event_types, wait_status
from tests.databases import PostgresServer
from tests.helpers import (
    forget,
    postgres_url,
    run_cli,
    start_server,
    use_postgres,
    wait_until,
)
from tests.helpers import test_env as process_env

pytestmark = pytest.mark.acceptance

#: The most a request may take while the database is down.
PROMPT_SECONDS = 3.0


@contextmanager
def _admin(server: PostgresServer) -> Iterator[Connection]:
    engine = create_engine(
        make_url(normalise_url(server.url_of("postgres"))),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _set_outage(server: PostgresServer, name: str, *, down: bool) -> None:
    with _admin(server) as conn:
        allow = "false" if down else "true"
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allow}')
        if down:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )


@pytest.fixture
def pg_data_dir(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Path]:
    url = postgres_server.create()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    use_postgres(data_dir, url)
    try:
        yield data_dir
    finally:
        _set_outage(postgres_server, str(make_url(url).database), down=False)
        forget(data_dir)
        postgres_server.drop(url)


def _follow(http: httpx.Client, task_id: str, seen: list[str], opened: threading.Event) -> None:
    """Collect the event types of a task's stream until its terminal event."""
    with http.stream("GET", f"/v1/tasks/{task_id}/events", timeout=60) as response:
        assert response.status_code == 200
        opened.set()
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen.append(orjson.loads(line[5:])["type"])
                if seen[-1] in ("task.completed", "task.failed", "task.cancelled"):
                    return


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_serve_rides_out_a_database_outage(
    pg_data_dir: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_url(pg_data_dir)
    assert url is not None
    name = str(make_url(url).database)
    server = start_server(pg_data_dir)
    try:
        with server.client() as http:
            before = http.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 3}})
            assert before.status_code == 201, before.text
            first = before.json()["id"]
            wait_status(http, first, "running")
            seen: list[str] = []
            opened = threading.Event()
            follower = threading.Thread(
                target=_follow, args=(server.client(), first, seen, opened), daemon=True
            )
            follower.start()
            assert opened.wait(10)

            _set_outage(postgres_server, name, down=True)
            outage_started = time.monotonic()
            try:
                submitted, took = _timed(
                    lambda: http.post(
                        "/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0}}
                    )
                )
                assert submitted.status_code == 503, submitted.text
                assert submitted.json()["error"]["code"] == "unavailable"
                assert took < PROMPT_SECONDS, took
                read, took = _timed(lambda: http.get(f"/v1/tasks/{first}"))
                assert read.status_code == 503, read.text
                assert read.json()["error"]["code"] == "unavailable"
                assert read.json()["error"]["request_id"]
                assert took < PROMPT_SECONDS, took
                ready, took = _timed(lambda: http.get("/readyz"))
                assert ready.status_code == 503 and took < PROMPT_SECONDS
                assert http.get("/healthz").status_code == 200
                # Long enough for the running task's lease to run out meanwhile.
                wait_until(
                    lambda: time.monotonic() - outage_started > 3.0, timeout=10, interval=0.1
                )
            finally:
                _set_outage(postgres_server, name, down=False)

            # The first request after the outage succeeds.
            after = http.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0.2}})
            assert after.status_code == 201, after.text
            second = after.json()["id"]
            assert wait_status(http, first, timeout=30)["status"] == "completed"
            assert wait_status(http, second, timeout=30)["status"] == "completed"
            assert http.get("/readyz").status_code == 200
            follower.join(timeout=30)
            assert seen and seen[-1] == "task.completed", seen
            assert server.process.poll() is None
    finally:
        assert server.stop() == 0, server.log()

    # Nothing was written by the refused submit; every event of both tasks is there.
    with database(pg_data_dir) as db:
        count = db.read_sync(
            lambda conn: conn.execute(select(func.count()).select_from(tasks)).scalar_one()
        )
    assert count == 2
    for task_id in (first, second):
        kinds = event_types(pg_data_dir, task_id)
        assert kinds[0] == "task.created" and kinds[-1] == "task.completed", kinds
        assert "task.started" in kinds
    doctor = run_cli(pg_data_dir, "doctor")
    assert "Credits are consistent" in doctor.stdout
    log = server.log()
    assert "Traceback" not in log, log
    # Each loop said once that the database was away, not at every retry.
    assert log.count("Retrying until it answers") <= 8, log


def test_a_worker_started_during_an_outage_waits_for_the_database(
    pg_data_dir: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_url(pg_data_dir)
    assert url is not None
    name = str(make_url(url).database)
    server = start_server(pg_data_dir, "--no-workers")
    log_path = pg_data_dir.parent / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        with server.client() as http:
            submitted = http.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0}})
            assert submitted.status_code == 201, submitted.text
            task_id = submitted.json()["id"]
            _set_outage(postgres_server, name, down=True)
            try:
                with log_path.open("wb") as log_file:
                    worker = subprocess.Popen(
                        [sys.executable, "-m", "taskgate", "worker"],
                        env=process_env(pg_data_dir),
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                wait_until(
                    lambda: "Retrying until it answers" in log_path.read_text(errors="replace"),
                    timeout=30,
                    message="the worker to say it waits for the database",
                )
                assert worker.poll() is None, log_path.read_text()
            finally:
                _set_outage(postgres_server, name, down=False)
            assert wait_status(http, task_id, timeout=60)["status"] == "completed"
    finally:
        if worker is not None:
            worker.terminate()
            assert worker.wait(timeout=30) == 0, log_path.read_text()
        assert server.stop() == 0, server.log()
    assert "Traceback" not in log_path.read_text()
