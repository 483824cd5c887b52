"""Fencing and lease recovery: a worker that lost its task changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from taskgate.composition import Services
from taskgate.core.models import Task
from taskgate.core.states import TaskStatus
from taskgate.store import queue
from taskgate.store import tasks as tasks_repo
from taskgate.store.queue import Finish, Lease
from tests.integration.taskrows import (
    SECOND,
    T0,
    add_account,
    event_count,
    event_rows,
    insert_tasks,
    lease_of,
    make_task,
    running_by_account,
    task_row,
)

LEASE = 2 * SECOND
BACKOFF = 50_000


def _running(services: Services, max_attempts: int = 3, worker: str = "wrk_old") -> Task:
    account = add_account(services, "acme")
    insert_tasks(services, [make_task(account.id, max_attempts=max_attempts)])
    (task,) = services.db.write_sync(
        lambda conn: queue.claim(
            conn, worker_id=worker, queues=["default"], limit=1, now=T0 + 1, lease_us=LEASE
        )
    )
    return task


def _snapshot(services: Services, task_id: str) -> tuple[dict[str, Any], int, Any]:
    return task_row(services, task_id), event_count(services), running_by_account(services)


def _write(services: Services, fn: Any) -> Any:
    return services.db.write_sync(fn)


def _all_fenced_calls(services: Services, lease: Lease, now: int) -> None:
    """Every call a worker makes with a lease; all must be refused."""
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        outcome = Finish(lease, status, output=[{"x": 1}], error={"code": "e"})
        assert _write(services, lambda c, o=outcome: queue.finish(c, o, now)) is None
    retry = Finish(lease, TaskStatus.QUEUED, error={"code": "e"}, retry_at=now)
    assert _write(services, lambda c: queue.finish(c, retry, now)) is None
    assert _write(services, lambda c: queue.renew(c, [lease], now, LEASE)) == {}
    assert _write(services, lambda c: queue.release(c, [lease], now)) == []
    progress = _write(services, lambda c: queue.record_progress(c, lease, 50.0, "s", "m", now))
    assert progress is None


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda lease: Lease(lease.task_id, "wrk_other", lease.attempt), id="worker"),
        pytest.param(lambda lease: Lease(lease.task_id, lease.worker_id, 0), id="older-attempt"),
        pytest.param(lambda lease: Lease(lease.task_id, lease.worker_id, 2), id="newer-attempt"),
    ],
)
def test_a_wrong_lease_changes_nothing(services: Services, wrong: Any) -> None:
    task = _running(services)
    before = _snapshot(services, task.id)
    _all_fenced_calls(services, wrong(lease_of(task)), T0 + 2)
    assert _snapshot(services, task.id) == before
    # The right lease still works.
    done = _write(
        services, lambda c: queue.finish(c, Finish(lease_of(task), TaskStatus.COMPLETED), T0 + 3)
    )
    assert done is not None and done.status is TaskStatus.COMPLETED


def test_renew_extends_only_a_held_lease(services: Services) -> None:
    task = _running(services)
    held = _write(services, lambda c: queue.renew(c, [lease_of(task)], T0 + SECOND, LEASE))
    assert list(held) == [task.id]
    assert task_row(services, task.id)["lease_expires_at"] == T0 + SECOND + LEASE
    # Renewed in time, the lease is not recovered.
    assert _write(services, lambda c: queue.recover_expired(c, T0 + 2 * SECOND, BACKOFF)) == []


def test_an_unexpired_lease_is_not_recovered(services: Services) -> None:
    task = _running(services)
    expires = task.lease_expires_at
    assert expires == T0 + 1 + LEASE
    assert _write(services, lambda c: queue.recover_expired(c, expires, BACKOFF)) == []
    assert task_row(services, task.id)["status"] == "running"


def test_expired_lease_with_attempts_left_is_retried(services: Services) -> None:
    task = _running(services, max_attempts=3)
    now = T0 + 1 + LEASE + 1
    (recovered,) = _write(services, lambda c: queue.recover_expired(c, now, BACKOFF))
    assert recovered.id == task.id
    row = task_row(services, task.id)
    assert row["status"] == "queued"
    assert row["error"]["code"] == "worker_lost" and row["error"]["retryable"] is True
    assert row["attempts"] == 1  # the lost attempt was spent
    assert row["worker_id"] is None and row["lease_expires_at"] is None
    assert row["run_at"] == now + BACKOFF
    assert [e["type"] for e in event_rows(services, task.id)][-1] == "task.requeued"
    stored, real, _ = running_by_account(services)
    assert stored == real == {task.account_id: 0}

    # The old worker comes back: nothing it says changes the task.
    before = _snapshot(services, task.id)
    _all_fenced_calls(services, lease_of(task), now + 1)
    assert _snapshot(services, task.id) == before

    # Another worker runs attempt 2; the old worker still cannot touch it.
    (again,) = _write(
        services,
        lambda c: queue.claim(
            c, worker_id="wrk_new", queues=["default"], limit=1, now=now + BACKOFF, lease_us=LEASE
        ),
    )
    assert (again.id, again.attempts, again.worker_id) == (task.id, 2, "wrk_new")
    before = _snapshot(services, task.id)
    _all_fenced_calls(services, lease_of(task), now + BACKOFF + 1)
    assert _snapshot(services, task.id) == before
    done = _write(
        services,
        lambda c: queue.finish(
            c, Finish(lease_of(again), TaskStatus.COMPLETED, output=[]), now + BACKOFF + 2
        ),
    )
    assert done is not None and (done.status, done.attempts) == (TaskStatus.COMPLETED, 2)
    # The completed task does not carry the error of the lost attempt.
    assert task_row(services, task.id)["error"] is None


def test_backoff_doubles_with_each_lost_attempt(services: Services) -> None:
    task = _running(services, max_attempts=3)
    now = T0 + 1 + LEASE + 1
    _write(services, lambda c: queue.recover_expired(c, now, BACKOFF))
    assert task_row(services, task.id)["run_at"] == now + BACKOFF
    start = now + BACKOFF
    _write(
        services,
        lambda c: queue.claim(
            c, worker_id="wrk_2", queues=["default"], limit=1, now=start, lease_us=LEASE
        ),
    )
    later = start + LEASE + 1
    _write(services, lambda c: queue.recover_expired(c, later, BACKOFF))
    row = task_row(services, task.id)
    assert (row["status"], row["attempts"], row["run_at"]) == ("queued", 2, later + 2 * BACKOFF)


def test_expired_lease_without_attempts_left_fails(services: Services) -> None:
    task = _running(services, max_attempts=1)
    now = T0 + 1 + LEASE + 1
    (recovered,) = _write(services, lambda c: queue.recover_expired(c, now, BACKOFF))
    assert recovered.status is TaskStatus.FAILED
    row = task_row(services, task.id)
    assert row["status"] == "failed" and row["completed_at"] == now
    assert row["error"]["code"] == "worker_lost"
    assert [e["type"] for e in event_rows(services, task.id)] == [
        "task.created",
        "task.started",
        "task.failed",
    ]
    before = _snapshot(services, task.id)
    _all_fenced_calls(services, lease_of(task), now + 1)
    assert _snapshot(services, task.id) == before
    assert _write(services, lambda c: queue.recover_expired(c, now + 10 * LEASE, BACKOFF)) == []
    stored, real, _ = running_by_account(services)
    assert stored == real == {task.account_id: 0}


def test_expired_lease_of_a_cancelled_task_cancels_it(services: Services) -> None:
    task = _running(services, max_attempts=3)
    asked = _write(services, lambda c: tasks_repo.request_cancel(c, task.id, T0 + 2))
    assert asked is not None
    now = T0 + 1 + LEASE + 1
    (recovered,) = _write(services, lambda c: queue.recover_expired(c, now, BACKOFF))
    assert recovered.status is TaskStatus.CANCELLED
    assert [e["type"] for e in event_rows(services, task.id)] == [
        "task.created",
        "task.started",
        "task.cancel_requested",
        "task.cancelled",
    ]
    before = _snapshot(services, task.id)
    _all_fenced_calls(services, lease_of(task), now + 1)
    assert _snapshot(services, task.id) == before


def test_a_cancel_asked_for_during_the_attempt_wins_over_its_outcome(services: Services) -> None:
    task = _running(services)
    _write(services, lambda c: tasks_repo.request_cancel(c, task.id, T0 + 2))
    done = _write(
        services,
        lambda c: queue.finish(c, Finish(lease_of(task), TaskStatus.COMPLETED, output=[]), T0 + 3),
    )
    assert done is not None and done.status is TaskStatus.CANCELLED
    assert task_row(services, task.id)["output"] is None
    assert event_rows(services, task.id)[-1]["type"] == "task.cancelled"


def test_release_returns_the_attempt(services: Services) -> None:
    task = _running(services)
    assert task.attempts == 1
    (released,) = _write(services, lambda c: queue.release(c, [lease_of(task)], T0 + 2))
    assert (released.status, released.attempts, released.worker_id) == (
        TaskStatus.QUEUED,
        0,
        None,
    )
    assert released.error is None
    assert event_rows(services, task.id)[-1]["type"] == "task.requeued"
    (again,) = _write(
        services,
        lambda c: queue.claim(
            c, worker_id="wrk_new", queues=["default"], limit=1, now=T0 + 3, lease_us=LEASE
        ),
    )
    assert again.attempts == 1
    stored, real, _ = running_by_account(services)
    assert stored == real == {task.account_id: 1}
