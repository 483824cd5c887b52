"""The event log: one row per change, written in the change's transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from taskgate.composition import Services
from taskgate.core.models import Task
from taskgate.core.states import TaskStatus
from taskgate.payloads import WorkflowSubmit
from taskgate.store import queue
from taskgate.store.queue import Finish
from taskgate.store.tables import events
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


def _claim(services: Services, now: int, limit: int = 1, worker: str = "wrk_a") -> list[Task]:
    return services.db.write_sync(
        lambda conn: queue.claim(
            conn, worker_id=worker, queues=["default"], limit=limit, now=now, lease_us=LEASE
        )
    )


class EventLog:
    """Checks, after each change, that exactly one event was added for the task,
    with the next seq, the expected type, and the task's row as it now stands."""

    def __init__(self, services: Services, task_id: str) -> None:
        self.services = services
        self.task_id = task_id
        self.total = event_count(services)
        self.types: list[str] = [e["type"] for e in event_rows(services, task_id)]

    def expect(self, type_: str) -> None:
        total = event_count(self.services)
        assert total == self.total + 1, f"{type_}: {total - self.total} events written"
        self.total = total
        rows = event_rows(self.services, self.task_id)
        self.types.append(type_)
        assert [e["type"] for e in rows] == self.types
        assert [e["seq"] for e in rows] == list(range(1, len(rows) + 1))
        row = task_row(self.services, self.task_id)
        last = rows[-1]
        assert row["event_seq"] == last["seq"]
        assert last["data"] == row
        assert last["account_id"] == row["account_id"]
        assert last["created_at"] == row["updated_at"]

    def expect_none(self) -> None:
        assert event_count(self.services) == self.total


def test_every_transition_writes_one_event(services: Services) -> None:
    account = add_account(services, "acme")
    view, created = asyncio.run(
        services.tasks.submit(
            account.id, "wait", WorkflowSubmit(input={"seconds": 1}), idempotency_key=None
        )
    )
    assert created
    task_id = view.task.id
    log = EventLog(services, task_id)
    assert log.types == ["task.created"]
    assert event_rows(services, task_id)[0]["data"] == task_row(services, task_id)
    now = view.task.created_at + SECOND

    (first,) = _claim(services, now)
    log.expect("task.started")
    services.db.write_sync(
        lambda conn: queue.record_progress(conn, lease_of(first), 40.0, "half", "m", now + 1)
    )
    log.expect("task.progress")
    services.db.write_sync(lambda conn: queue.renew(conn, [lease_of(first)], now + 2, LEASE))
    log.expect_none()  # a renewal is not a change of the task
    retry = Finish(lease_of(first), TaskStatus.QUEUED, error={"code": "e"}, retry_at=now + 3)
    services.db.write_sync(lambda conn: queue.finish(conn, retry, now + 3))
    log.expect("task.requeued")

    (second,) = _claim(services, now + 4, worker="wrk_b")
    log.expect("task.started")
    cancelled = asyncio.run(services.tasks.cancel(account.id, task_id))
    assert cancelled.task.status is TaskStatus.RUNNING
    assert cancelled.task.cancel_requested_at is not None
    log.expect("task.cancel_requested")
    asyncio.run(services.tasks.cancel(account.id, task_id))  # asking twice changes nothing
    log.expect_none()
    done = services.db.write_sync(
        lambda conn: queue.finish(conn, Finish(lease_of(second), TaskStatus.CANCELLED), now + 5)
    )
    assert done is not None
    log.expect("task.cancelled")
    assert log.types == [
        "task.created",
        "task.started",
        "task.progress",
        "task.requeued",
        "task.started",
        "task.cancel_requested",
        "task.cancelled",
    ]


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (TaskStatus.COMPLETED, "task.completed"),
        (TaskStatus.FAILED, "task.failed"),
        (TaskStatus.CANCELLED, "task.cancelled"),
    ],
)
def test_each_terminal_outcome_writes_its_event(
    services: Services, status: TaskStatus, event: str
) -> None:
    account = add_account(services, "acme")
    (task,) = insert_tasks(services, [make_task(account.id)])
    log = EventLog(services, task.id)
    (running,) = _claim(services, T0 + 1)
    log.expect("task.started")
    outcome = Finish(lease_of(running), status, output=[], error={"code": "e"})
    services.db.write_sync(lambda conn: queue.finish(conn, outcome, T0 + 2))
    log.expect(event)
    # A finished task takes no further changes.
    again = Finish(lease_of(running), TaskStatus.COMPLETED, output=[])
    assert services.db.write_sync(lambda conn: queue.finish(conn, again, T0 + 3)) is None
    log.expect_none()


def test_cancel_of_a_queued_task_writes_one_event(services: Services) -> None:
    account = add_account(services, "acme")
    (task,) = insert_tasks(services, [make_task(account.id)])
    log = EventLog(services, task.id)
    view = asyncio.run(services.tasks.cancel(account.id, task.id))
    assert view.task.status is TaskStatus.CANCELLED
    log.expect("task.cancelled")
    asyncio.run(services.tasks.cancel(account.id, task.id))
    log.expect_none()


def test_a_batch_claim_writes_one_event_per_task(services: Services) -> None:
    owners = [add_account(services, name) for name in ("a", "b")]
    made = insert_tasks(services, [make_task(o.id) for o in owners for _ in range(3)])
    before = event_count(services)
    claimed = _claim(services, T0 + 1, limit=5)
    assert len(claimed) == 5
    assert event_count(services) == before + 5
    for task in claimed:
        rows = event_rows(services, task.id)
        assert [(e["seq"], e["type"]) for e in rows] == [(1, "task.created"), (2, "task.started")]
        assert rows[-1]["data"]["worker_id"] == "wrk_a"
    unclaimed = {t.id for t in made} - {t.id for t in claimed}
    assert [len(event_rows(services, task_id)) for task_id in unclaimed] == [1]


def test_a_failed_transaction_writes_no_event(services: Services) -> None:
    account = add_account(services, "acme")
    (task,) = insert_tasks(services, [make_task(account.id)])
    before = (task_row(services, task.id), event_count(services), running_by_account(services))

    def claim_then_fail(conn: Any) -> None:
        claimed = queue.claim(
            conn, worker_id="wrk_a", queues=["default"], limit=1, now=T0 + 1, lease_us=LEASE
        )
        assert len(claimed) == 1
        raise RuntimeError("the rest of the transaction failed")

    with pytest.raises(RuntimeError):
        services.db.write_sync(claim_then_fail)
    assert (task_row(services, task.id), event_count(services), running_by_account(services)) == (
        before
    )


def test_a_change_whose_event_cannot_be_written_is_not_made(services: Services) -> None:
    """The event is in the change's transaction: when its insert fails (here, the
    next seq is already taken), the task row and the running count roll back too."""
    account = add_account(services, "acme")
    insert_tasks(services, [make_task(account.id)])
    (running,) = _claim(services, T0 + 1)
    services.db.write_sync(
        lambda conn: conn.execute(
            insert(events).values(
                id="evt_squatter",
                task_id=running.id,
                account_id=account.id,
                seq=running.event_seq + 1,
                type="task.progress",
                created_at=T0 + 2,
                data={},
            )
        )
    )
    before = (task_row(services, running.id), event_count(services), running_by_account(services))
    outcome = Finish(lease_of(running), TaskStatus.COMPLETED, output=[])
    with pytest.raises(IntegrityError):
        services.db.write_sync(lambda conn: queue.finish(conn, outcome, T0 + 3))
    after = (task_row(services, running.id), event_count(services), running_by_account(services))
    assert after == before
    assert before[0]["status"] == "running"
