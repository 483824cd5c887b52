"""Cancellation of running tasks, end to end: a handler that ignores it is killed
after the grace period, and its slot goes on working."""

from __future__ import annotations

import time

import pytest

from tests.acceptance.worker_support import (
    alive,
    event_types,
    executors,
    get_task,
    serve_worker,
    submit,
    wait_status,
)
from tests.helpers import ServerProcess, wait_until

pytestmark = pytest.mark.acceptance

GRACE = 1.0  # TASKGATE_CANCEL_GRACE_SECONDS of the test server
MARGIN = 2.0


def _executors(server: ServerProcess) -> set[int]:
    return executors(serve_worker(server.process.pid))


def test_a_stubborn_handler_is_cancelled_within_the_grace_period(server: ServerProcess) -> None:
    with server.client() as http:
        before = wait_until(lambda: len(_executors(server)) == 2 and _executors(server))
        task_id = submit(http, "stubborn", {"seconds": 60})
        wait_status(http, task_id, "running", timeout=10)

        asked = time.monotonic()
        response = http.post(f"/v1/tasks/{task_id}/cancel")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "running"
        assert response.json()["cancel_requested_at"] is not None
        task = wait_status(http, task_id, timeout=GRACE + 5)
        took = time.monotonic() - asked
        assert task["status"] == "cancelled", task
        assert GRACE * 0.8 <= took <= GRACE + MARGIN, took  # it ignored the flag: the grace ran
        assert task["completed_at"] is not None and task["output"] == []
        assert [t for t in event_types(server.data_dir, task_id) if t != "task.progress"] == [
            "task.created",
            "task.started",
            "task.cancel_requested",
            "task.cancelled",
        ]

        # Its executor was killed and replaced; the other one was left alone.
        after = wait_until(lambda: len(_executors(server)) == 2 and _executors(server))
        assert len(before - after) == 1
        assert not any(alive(p) for p in before - after)
        # Both slots work: two tasks run at once, one of them on the new executor (long
        # enough to overlap even when a loaded machine starts the new executor slowly).
        probes = [submit(http, "probe", {"seconds": 5}) for _ in range(2)]
        wait_until(
            lambda: all(get_task(http, p)["status"] == "running" for p in probes),
            timeout=20,
            message="both probes running at once",
        )
        done = [wait_status(http, p, timeout=20) for p in probes]
        assert [t["status"] for t in done] == ["completed", "completed"]
        assert {t["output"][0]["pid"] for t in done} == after


def test_a_cooperative_handler_stops_at_once(server: ServerProcess) -> None:
    with server.client() as http:
        before = wait_until(lambda: len(_executors(server)) == 2 and _executors(server))
        task_id = submit(http, "wait", {"seconds": 30, "steps": 30})
        wait_status(http, task_id, "running", timeout=10)
        asked = time.monotonic()
        assert http.post(f"/v1/tasks/{task_id}/cancel").status_code == 202
        task = wait_status(http, task_id, timeout=5)
        assert task["status"] == "cancelled"
        assert time.monotonic() - asked < GRACE  # no need to wait for the grace period
        assert _executors(server) == before  # nothing was killed
