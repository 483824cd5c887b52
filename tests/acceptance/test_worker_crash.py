"""Crashes, end to end: a worker or the whole server killed with SIGKILL while a
task runs. The task is recovered once its lease runs out; nothing stays running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.acceptance.worker_support import (
    alive,
    descendants,
    event_types,
    executors,
    get_task,
    running_ids,
    serve_worker,
    stored_running,
    stored_task,
    submit,
    wait_status,
    worker_process,
)
from tests.helpers import start_server, wait_until

pytestmark = pytest.mark.acceptance

LEASE = 2.0  # TASKGATE_LEASE_SECONDS of the test processes


def _all_gone(pids: list[int], timeout: float = 5) -> None:
    wait_until(
        lambda: not [p for p in pids if alive(p)],
        timeout=timeout,
        message=f"processes {pids} to exit",
    )


def test_a_killed_worker_s_task_is_retried_by_another(data_dir: Path) -> None:
    server = start_server(data_dir, "--no-workers")
    try:
        with server.client() as http, worker_process(data_dir) as first:
            (doomed,) = first.wait_ready()
            task_id = submit(http, "probe", {"seconds": 1.5})
            running = wait_status(http, task_id, "running", timeout=10)
            assert running["attempts"] == 1

            tree = descendants(first.pid)
            assert doomed in tree
            os.kill(first.pid, signal.SIGKILL)
            first.process.wait(timeout=5)
            _all_gone(tree)  # its executor died with it
            lease_expires_at = stored_task(data_dir, task_id)["lease_expires_at"]
            asked_at = time.time() * 1e6
            status = get_task(http, task_id)["status"]
            if asked_at < lease_expires_at:  # (a loaded machine may take longer to get here)
                assert status == "running"  # until the lease runs out

            with worker_process(data_dir) as second:
                (survivor,) = second.wait_ready()
                task = wait_status(http, task_id, timeout=LEASE + 15)
                assert task["status"] == "completed", task
                assert task["attempts"] == 2
                assert task["error"] is None
                assert task["output"][0]["attempt"] == 2
                assert task["output"][0]["pid"] == survivor
                assert running_ids(http) == []

        assert [t for t in event_types(data_dir, task_id) if t != "task.progress"] == [
            "task.created",
            "task.started",
            "task.requeued",
            "task.started",
            "task.completed",
        ]
        row = stored_task(data_dir, task_id)
        # Not taken back before the lease ran out.
        assert row["started_at"] > lease_expires_at
        assert stored_running(data_dir) == []
    finally:
        server.stop()


@pytest.mark.parametrize("whole_tree", [True, False], ids=["whole-tree", "serve-only"])
def test_a_killed_server_s_task_completes_after_restart(data_dir: Path, whole_tree: bool) -> None:
    """SIGKILL of serve and every process below it (the task's lease must run out),
    or of serve alone (its worker notices, drains and puts the task back)."""
    server = start_server(data_dir)
    key = server.api_key
    try:
        with server.client() as http:
            # Serve-only: longer than the drain window, so the drain cannot finish it.
            task_id = submit(http, "probe", {"seconds": 2 if whole_tree else 5})
            wait_status(http, task_id, "running", timeout=10)
        worker = serve_worker(server.process.pid)
        tree = descendants(server.process.pid)
        assert executors(worker) <= set(tree)
        killed = time.monotonic()
        for pid in [server.process.pid, *tree] if whole_tree else [server.process.pid]:
            os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        # Nothing of the old server survives: with serve alone killed, the worker
        # drains (3 s) and exits, its executors with it.
        _all_gone(tree, timeout=10)
        row = stored_task(data_dir, task_id)
        if whole_tree:
            assert (row["status"], row["attempts"]) == ("running", 1)
        else:
            assert time.monotonic() - killed < 3 + 1 + 3
            assert (row["status"], row["attempts"], row["worker_id"]) == ("queued", 0, None)
    finally:
        server.stop()

    restarted = start_server(data_dir)
    try:
        with restarted.client(key) as http:
            task = wait_status(http, task_id, timeout=LEASE + 15)
            assert task["status"] == "completed", task
            expected = 2 if whole_tree else 1
            assert task["attempts"] == task["output"][0]["attempt"] == expected
            assert running_ids(http) == []
        assert stored_running(data_dir) == []
    finally:
        restarted.stop()
