"""Helpers for store-level tests: task rows built directly, and what the database holds.

Store functions take ``now`` explicitly, so these tests drive time with a counter
instead of the wall clock: leases expire and backoffs end exactly when a test says.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from taskgate.composition import Services
from taskgate.core.ids import new_id
from taskgate.core.models import Account, Task
from taskgate.core.states import TaskStatus
from taskgate.store import tasks as tasks_repo
from taskgate.store.queue import Lease
from taskgate.store.tables import accounts, events, tasks

SECOND = 1_000_000
# Far enough from any real clock reading that no wall-clock value leaks in unnoticed.
T0 = 1_900_000_000 * SECOND


def make_task(
    account_id: str,
    *,
    priority: int = 0,
    max_attempts: int = 3,
    created_at: int = T0,
    queue: str = "default",
    credits: int = 0,
) -> Task:
    return Task(
        id=new_id("task"),
        account_id=account_id,
        workflow="wait",
        workflow_version="1",
        queue=queue,
        status=TaskStatus.QUEUED,
        priority=priority,
        input={"seconds": 0},
        metadata={},
        out_task_id=None,
        request_hash="0" * 64,
        callback_url=None,
        callback_events=None,
        progress_percent=0.0,
        progress_stage=None,
        progress_message=None,
        output=None,
        warnings=None,
        error=None,
        usage=None,
        estimated_credits=credits,
        reserved_credits=credits,
        charged_credits=None,
        refunded_credits=None,
        expected_seconds=1.0,
        timeout_seconds=60.0,
        attempts=0,
        max_attempts=max_attempts,
        run_at=created_at,
        worker_id=None,
        lease_expires_at=None,
        created_at=created_at,
        updated_at=created_at,
        started_at=None,
        completed_at=None,
        cancel_requested_at=None,
        event_seq=1,
    )


def add_account(services: Services, name: str, concurrency: int = 4) -> Account:
    return services.accounts.create_account(name, concurrency=concurrency)


def insert_tasks(services: Services, new: list[Task]) -> list[Task]:
    """Insert queued tasks (with their ``task.created`` events) in one transaction."""

    def write(conn: Any) -> None:
        for task in new:
            tasks_repo.insert(conn, task)

    services.db.write_sync(write)
    return new


def task_row(services: Services, task_id: str) -> dict[str, Any]:
    row = services.db.read_sync(
        lambda conn: conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().one()
    )
    return dict(row)


def event_rows(services: Services, task_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(events).order_by(events.c.task_id, events.c.seq)
    if task_id is not None:
        stmt = stmt.where(events.c.task_id == task_id)
    return [dict(row) for row in services.db.read_sync(lambda c: c.execute(stmt).mappings().all())]


def event_count(services: Services) -> int:
    return int(
        services.db.read_sync(
            lambda conn: conn.execute(select(func.count()).select_from(events)).scalar_one()
        )
    )


def running_by_account(services: Services) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(accounts.running, the real count of running tasks, concurrency limits) by account."""

    def read(conn: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        rows = conn.execute(
            select(accounts.c.id, accounts.c.running, accounts.c.concurrency_limit)
        ).all()
        real = Counter(
            conn.execute(
                select(tasks.c.account_id).where(tasks.c.status == TaskStatus.RUNNING)
            ).scalars()
        )
        return (
            {r.id: r.running for r in rows},
            {r.id: real.get(r.id, 0) for r in rows},
            {r.id: r.concurrency_limit for r in rows},
        )

    return services.db.read_sync(read)


def lease_of(task: Task) -> Lease:
    assert task.worker_id is not None
    return Lease(task.id, task.worker_id, task.attempts)
