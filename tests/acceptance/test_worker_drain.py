"""SIGTERM drains: no new claims, running tasks get the drain window, and what is
still running then goes back to the queue without spending an attempt."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.acceptance.worker_support import (
    event_types,
    running_ids,
    stored_running,
    stored_task,
    submit,
    wait_status,
)
from tests.helpers import start_server

pytestmark = pytest.mark.acceptance

DRAIN = 3.0  # TASKGATE_DRAIN_SECONDS of the test server


def _lifecycle(data_dir: Path, task_id: str) -> list[str]:
    return [t for t in event_types(data_dir, task_id) if t != "task.progress"]


def test_sigterm_drains_then_requeues_without_spending_an_attempt(data_dir: Path) -> None:
    server = start_server(data_dir)
    key = server.api_key
    try:
        with server.client() as http:
            long = submit(http, "probe", {"seconds": DRAIN + 2.5})
            short = submit(http, "probe", {"seconds": 2.0})
            for task_id in (long, short):
                wait_status(http, task_id, "running", timeout=10)
            # Queued behind them: must not be claimed during the drain.
            waiting = submit(http, "probe", {"seconds": 0})
        terminated_at = time.time()
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.process.wait(timeout=DRAIN + 15) == 0
        took = time.monotonic() - started
        assert DRAIN * 0.9 <= took <= DRAIN + 5, took
    finally:
        server.stop()

    # The short task finished during the drain.
    finished = stored_task(data_dir, short)
    assert (finished["status"], finished["attempts"]) == ("completed", 1)
    assert finished["output"][0]["left"] > terminated_at
    # The long one went back to the queue, its attempt given back, no error recorded.
    back = stored_task(data_dir, long)
    assert (back["status"], back["attempts"], back["worker_id"]) == ("queued", 0, None)
    assert back["lease_expires_at"] is None and back["error"] is None
    assert _lifecycle(data_dir, long) == ["task.created", "task.started", "task.requeued"]
    assert stored_task(data_dir, waiting)["status"] == "queued"
    assert stored_running(data_dir) == []

    restarted = start_server(data_dir)
    try:
        with restarted.client(key) as http:
            task = wait_status(http, long, timeout=DRAIN + 20)
            assert task["status"] == "completed", task
            # The drained attempt was given back: the successful run is attempt 1.
            assert task["attempts"] == task["output"][0]["attempt"] == 1
            assert wait_status(http, waiting, timeout=10)["status"] == "completed"
            assert running_ids(http) == []
        assert _lifecycle(data_dir, long) == [
            "task.created",
            "task.started",
            "task.requeued",
            "task.started",
            "task.completed",
        ]
    finally:
        restarted.stop()
