"""Helpers for the worker acceptance tests: tasks over HTTP, process trees, and
separately started worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from taskgate.store.db import Database
from taskgate.store.tables import events, tasks
from tests.helpers import database_url, test_env, wait_until

TERMINAL = ("completed", "failed", "cancelled")


def submit(http: httpx.Client, workflow: str, input_: dict[str, Any] | None = None) -> str:
    response = http.post("/v1/tasks", json={"workflow": workflow, "input": input_ or {}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def get_task(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(
    http: httpx.Client, task_id: str, *statuses: str, timeout: float = 15
) -> dict[str, Any]:
    wanted = statuses or TERMINAL

    def reached() -> dict[str, Any] | None:
        task = get_task(http, task_id)
        if task["status"] in wanted:
            return task
        if task["status"] in TERMINAL:
            raise AssertionError(f"task ended {task['status']}, not {wanted}: {task}")
        return None

    return wait_until(reached, timeout=timeout, interval=0.02, message=f"{task_id} {wanted}")


def running_ids(http: httpx.Client) -> list[str]:
    response = http.get("/v1/tasks", params={"status": "running", "limit": 100})
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["data"]]


def children(pid: int) -> list[int]:
    found: list[int] = []
    for thread in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (thread / "children").read_text().split())
    return found


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def spawned_children(pid: int) -> list[int]:
    """Live children started by multiprocessing's spawn (not its resource tracker)."""
    return [p for p in children(pid) if alive(p) and "multiprocessing.spawn" in cmdline(p)]


def serve_worker(serve_pid: int) -> int:
    """The worker process ``taskgate serve`` runs its slots in: forked from serve
    (on Linux), so with serve's command line."""
    command = cmdline(serve_pid)
    (worker,) = [p for p in children(serve_pid) if alive(p) and cmdline(p) == command]
    return worker


def executors(worker_pid: int) -> set[int]:
    """A worker's executor processes, one per slot: forked by the worker's fork
    server (the platform's default), or spawned by the worker itself."""
    found = set(spawned_children(worker_pid))
    for server in children(worker_pid):
        if alive(server) and "multiprocessing.forkserver" in cmdline(server):
            found.update(p for p in children(server) if alive(p))
    return found


class WorkerProcess:
    """``taskgate worker`` started on its own against a data dir."""

    def __init__(self, data_dir: Path, slots: int = 1) -> None:
        self.log_path = data_dir.parent / f"worker-{os.urandom(3).hex()}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskgate", "worker", "--workers", str(slots)],
                env=test_env(data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.slots = slots

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 20) -> set[int]:
        """Wait until every slot has its executor process; returns their pids."""

        def ready() -> set[int] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()}")
            found = executors(self.pid)
            return found if len(found) == self.slots and "started" in self.log() else None

        return wait_until(ready, timeout=timeout, interval=0.05, message="the worker's executors")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def worker_process(data_dir: Path, slots: int = 1) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(data_dir, slots)
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def database(data_dir: Path) -> Iterator[Database]:
    """The data dir's database, opened directly (for what HTTP does not show)."""
    db = Database(database_url(data_dir), pool_size=1)
    try:
        yield db
    finally:
        db.close()


def stored_task(data_dir: Path, task_id: str) -> dict[str, Any]:
    with database(data_dir) as db:
        row = db.read_sync(
            lambda conn: conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().one()
        )
        return dict(row)


def event_types(data_dir: Path, task_id: str) -> list[str]:
    with database(data_dir) as db:
        return list(
            db.read_sync(
                lambda conn: conn.execute(
                    select(events.c.type).where(events.c.task_id == task_id).order_by(events.c.seq)
                ).scalars()
            )
        )


def stored_running(data_dir: Path) -> list[str]:
    with database(data_dir) as db:
        return list(
            db.read_sync(
                lambda conn: conn.execute(
                    select(tasks.c.id).where(tasks.c.status == "running")
                ).scalars()
            )
        )
