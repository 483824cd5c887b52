"""Task rows as workers see them: claim, finish, retry, renew, recover.

Every transition out of ``running`` is fenced by ``worker_id`` and ``attempts``: a
worker whose task was recovered and handed to another finds no row to change.
Each one also keeps ``accounts.running`` exact in the same transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update

from taskgate.core.models import Task
from taskgate.core.states import TERMINAL_EVENT, EventType, TaskStatus
from taskgate.store import events
from taskgate.store.tables import accounts, tasks


@dataclass(slots=True, frozen=True)
class Lease:
    """What fences a running task: the worker that holds it, and which attempt."""

    task_id: str
    worker_id: str
    attempt: int


@dataclass(slots=True)
class Finish:
    """The outcome of one attempt, as a worker reports it."""

    lease: Lease
    status: TaskStatus  # completed, failed or cancelled; queued means retry
    output: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] | None = None
    retry_at: int | None = None
    progress: tuple[float, str | None, str | None] | None = None


def claim(
    conn: Connection,
    *,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    now: int,
    lease_us: int,
) -> list[Task]:
    """Take up to ``limit`` queued tasks, accounts taking turns, each account under
    its concurrency limit and in priority then age order within it.

    Race-free on SQLite because the caller's transaction holds the write lock
    (``BEGIN IMMEDIATE``) from before the first read.
    """
    claimed: list[Task] = []
    while len(claimed) < limit:
        picked = _pick(conn, queues=queues, limit=limit - len(claimed), now=now)
        if not picked:
            break
        rows = conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(picked), tasks.c.status == TaskStatus.QUEUED)
            .values(
                status=TaskStatus.RUNNING,
                attempts=tasks.c.attempts + 1,
                worker_id=worker_id,
                lease_expires_at=now + lease_us,
                started_at=now,
                updated_at=now,
                event_seq=tasks.c.event_seq + 1,
            )
            .returning(tasks)
        ).mappings()
        batch = sorted((Task.from_mapping(row) for row in rows), key=lambda t: picked.index(t.id))
        # Accounts served in this batch move to the back of the round, in the
        # order they were served.
        order = list(dict.fromkeys(t.account_id for t in batch))
        counts = Counter(t.account_id for t in batch)
        for offset, account_id in enumerate(order):
            conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(
                    running=accounts.c.running + counts[account_id],
                    last_claim_at=now + offset,
                )
            )
        events.append(conn, batch, EventType.STARTED, now)
        claimed.extend(batch)
    return claimed


def _pick(conn: Connection, *, queues: Sequence[str], limit: int, now: int) -> list[str]:
    ready = (
        select(tasks.c.id)
        .where(
            tasks.c.account_id == accounts.c.id,
            tasks.c.status == TaskStatus.QUEUED,
            tasks.c.run_at <= now,
            tasks.c.queue.in_(list(queues)),
        )
        .exists()
    )
    candidates = conn.execute(
        select(accounts.c.id, accounts.c.concurrency_limit - accounts.c.running)
        .where(accounts.c.running < accounts.c.concurrency_limit, ready)
        .order_by(accounts.c.last_claim_at.asc().nulls_first(), accounts.c.id)
        .limit(limit)
    ).all()
    if not candidates:
        return []
    # Deal the free slots out one per account per round.
    quota = dict.fromkeys((account_id for account_id, _ in candidates), 0)
    free = dict(candidates)
    remaining = limit
    while remaining:
        dealt = False
        for account_id in quota:
            if remaining and quota[account_id] < free[account_id]:
                quota[account_id] += 1
                remaining -= 1
                dealt = True
        if not dealt:
            break
    picked: list[str] = []
    for account_id, count in quota.items():
        picked.extend(
            conn.execute(
                select(tasks.c.id)
                .where(
                    tasks.c.account_id == account_id,
                    tasks.c.status == TaskStatus.QUEUED,
                    tasks.c.run_at <= now,
                    tasks.c.queue.in_(list(queues)),
                )
                .order_by(tasks.c.priority.desc(), tasks.c.id)
                .limit(count)
            ).scalars()
        )
    return picked


def _leave_running(conn: Connection, changed: Iterable[Task]) -> None:
    for account_id, count in Counter(t.account_id for t in changed).items():
        conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(running=accounts.c.running - count)
        )


def _fenced(lease: Lease) -> Any:
    return (
        (tasks.c.id == lease.task_id)
        & (tasks.c.status == TaskStatus.RUNNING)
        & (tasks.c.worker_id == lease.worker_id)
        & (tasks.c.attempts == lease.attempt)
    )


def record_progress(
    conn: Connection, lease: Lease, percent: float, stage: str | None, message: str | None, now: int
) -> Task | None:
    row = (
        conn.execute(
            update(tasks)
            .where(_fenced(lease))
            .values(
                progress_percent=percent,
                progress_stage=stage,
                progress_message=message,
                updated_at=now,
                event_seq=tasks.c.event_seq + 1,
            )
            .returning(tasks)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    task = Task.from_mapping(row)
    events.append(conn, [task], EventType.PROGRESS, now)
    return task


def finish(conn: Connection, outcome: Finish, now: int) -> Task | None:
    """Apply one attempt's outcome; None if the worker no longer holds the task."""
    values: dict[str, Any] = {
        "status": outcome.status,
        "updated_at": now,
        "event_seq": tasks.c.event_seq + 1,
        "lease_expires_at": None,
    }
    if outcome.progress is not None:
        percent, stage, message = outcome.progress
        values.update(progress_percent=percent, progress_stage=stage, progress_message=message)
    if outcome.warnings is not None:
        values["warnings"] = outcome.warnings
    if outcome.usage is not None:
        values["usage"] = outcome.usage
    if outcome.error is not None:
        values["error"] = outcome.error
    if outcome.status is TaskStatus.QUEUED:
        values.update(worker_id=None, run_at=outcome.retry_at if outcome.retry_at else now)
        event_type = EventType.REQUEUED
    else:
        values["completed_at"] = now
        if outcome.status is TaskStatus.COMPLETED:
            values.update(output=outcome.output or [], progress_percent=100.0)
        event_type = TERMINAL_EVENT[outcome.status]
    condition = _fenced(outcome.lease)
    if outcome.status is not TaskStatus.CANCELLED:
        # A cancel asked for while the attempt ran wins over its outcome.
        condition = condition & tasks.c.cancel_requested_at.is_(None)
    row = (
        conn.execute(update(tasks).where(condition).values(**values).returning(tasks))
        .mappings()
        .first()
    )
    if row is None:
        if outcome.status is not TaskStatus.CANCELLED:
            return finish(
                conn,
                Finish(
                    outcome.lease,
                    TaskStatus.CANCELLED,
                    usage=outcome.usage,
                    warnings=outcome.warnings,
                    progress=outcome.progress,
                ),
                now,
            )
        return None
    task = Task.from_mapping(row)
    _leave_running(conn, [task])
    events.append(conn, [task], event_type, now)
    return task


def release(conn: Connection, leases: Sequence[Lease], now: int) -> list[Task]:
    """Put running tasks back in the queue without spending their attempt (drain)."""
    released: list[Task] = []
    for lease in leases:
        row = (
            conn.execute(
                update(tasks)
                .where(_fenced(lease))
                .values(
                    status=TaskStatus.QUEUED,
                    attempts=tasks.c.attempts - 1,
                    worker_id=None,
                    lease_expires_at=None,
                    run_at=now,
                    updated_at=now,
                    event_seq=tasks.c.event_seq + 1,
                )
                .returning(tasks)
            )
            .mappings()
            .first()
        )
        if row is not None:
            released.append(Task.from_mapping(row))
    _leave_running(conn, released)
    events.append(conn, released, EventType.REQUEUED, now)
    return released


def renew(conn: Connection, leases: Sequence[Lease], now: int, lease_us: int) -> list[Task]:
    """Extend the leases still held; returns those tasks (the others were lost)."""
    held: list[Task] = []
    for lease in leases:
        row = (
            conn.execute(
                update(tasks)
                .where(_fenced(lease))
                .values(lease_expires_at=now + lease_us)
                .returning(tasks)
            )
            .mappings()
            .first()
        )
        if row is not None:
            held.append(Task.from_mapping(row))
    return held


def recover_expired(conn: Connection, now: int, backoff_us: int, batch: int = 500) -> list[Task]:
    """Tasks whose lease ran out: retried while attempts are left (``worker_lost``
    is retryable), else failed; a task whose cancel was asked for is cancelled."""
    expired = [
        Task.from_mapping(row)
        for row in conn.execute(
            select(tasks)
            .where(tasks.c.status == TaskStatus.RUNNING, tasks.c.lease_expires_at < now)
            .limit(batch)
        ).mappings()
    ]
    changed: list[Task] = []
    for task in expired:
        assert task.worker_id is not None
        lease = Lease(task.id, task.worker_id, task.attempts)
        error = {
            "code": "worker_lost",
            "message": "The worker running this task stopped responding.",
            "retryable": True,
        }
        if task.cancel_requested_at is not None:
            outcome = Finish(lease, TaskStatus.CANCELLED)
        elif task.attempts < task.max_attempts:
            retry_at = now + backoff_us * (2 ** (task.attempts - 1))
            outcome = Finish(lease, TaskStatus.QUEUED, error=error, retry_at=retry_at)
        else:
            outcome = Finish(lease, TaskStatus.FAILED, error=error)
        done = finish(conn, outcome, now)
        if done is not None:
            changed.append(done)
    return changed


def unfinished_counts(conn: Connection) -> dict[str, int]:
    """Queued and running tasks (each count reads its partial index)."""
    return {
        status: int(
            conn.execute(
                select(func.count()).select_from(tasks).where(tasks.c.status == status)
            ).scalar_one()
        )
        for status in (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value)
    }
