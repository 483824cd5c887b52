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

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    bindparam,
    case,
    func,
    select,
    text,
    update,
)

from taskgate.core.models import Task
from taskgate.core.states import TERMINAL_EVENT, EventType, TaskStatus
from taskgate.store import events, ledger, pgclaim
from taskgate.store.prepared import Prepared
from taskgate.store.tables import accounts, status_is, tasks


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
    #: The price of the usage in millicredits (completed tasks only; the charge is
    #: capped at the reservation, and failed or cancelled tasks are charged nothing).
    charge: int = 0
    retry_at: int | None = None
    progress: tuple[float, str | None, str | None] | None = None


def _claim_statements() -> dict[str, Prepared]:
    queued = status_is(tasks.c.status, TaskStatus.QUEUED.value)
    ready_here = (
        queued & (tasks.c.queue == bindparam("queue")) & (tasks.c.run_at <= bindparam("now"))
    )
    has_ready = select(tasks.c.id).where(ready_here, tasks.c.account_id == accounts.c.id).exists()
    return {
        # Accounts under their limit with ready work, the one served longest ago first.
        "candidates": Prepared(
            select(accounts.c.id, accounts.c.concurrency_limit - accounts.c.running)
            .where(accounts.c.running < accounts.c.concurrency_limit, has_ready)
            .order_by(accounts.c.last_claim_at.asc().nulls_first(), accounts.c.id)
            .limit(bindparam("limit"))
        ),
        # An account's first ready tasks, in priority then age order (the claim
        # index's order), started in one statement.
        "start": Prepared(
            update(tasks)
            .where(
                tasks.c.id.in_(
                    select(tasks.c.id)
                    .where(ready_here, tasks.c.account_id == bindparam("account_id"))
                    .order_by(tasks.c.priority.desc(), tasks.c.id)
                    .limit(bindparam("limit"))
                    .scalar_subquery()
                ),
                queued,
            )
            .values(
                status=TaskStatus.RUNNING.value,
                attempts=tasks.c.attempts + 1,
                worker_id=bindparam("claimer"),
                lease_expires_at=bindparam("lease_expires_at"),
                started_at=bindparam("now"),
                updated_at=bindparam("now"),
                event_seq=tasks.c.event_seq + 1,
            )
            .returning(tasks)
        ),
        "admit": Prepared(
            update(accounts)
            .where(accounts.c.id == bindparam("account_id"))
            .values(
                running=accounts.c.running + bindparam("count"),
                last_claim_at=bindparam("last_claim_at"),
            )
        ),
        "leave": Prepared(
            update(accounts)
            .where(accounts.c.id == bindparam("account_id"))
            .values(running=accounts.c.running - bindparam("count"))
        ),
    }


_CLAIM = _claim_statements()


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
    (``BEGIN IMMEDIATE``) from before the first read; on PostgreSQL because the
    claim locks the rows of the accounts it admits tasks of (``pgclaim``).
    """
    claimed: list[Task] = []
    on_sqlite = conn.dialect.name == "sqlite"
    for queue in queues:
        while len(claimed) < limit:
            if on_sqlite:
                batch = _start_sqlite(
                    conn,
                    queue=queue,
                    limit=limit - len(claimed),
                    claimer=worker_id,
                    now=now,
                    lease_us=lease_us,
                )
            else:
                batch = pgclaim.start(
                    conn,
                    queue=queue,
                    limit=limit - len(claimed),
                    claimer=worker_id,
                    now=now,
                    lease_expires_at=now + lease_us,
                )
            if not batch:
                break
            if on_sqlite:
                # Accounts served in this batch move to the back of the round, in the
                # order they were served (on PostgreSQL the claim statement does so).
                counts = Counter(t.account_id for t in batch)
                for offset, account_id in enumerate(counts):
                    _CLAIM["admit"].execute(
                        conn,
                        account_id=account_id,
                        count=counts[account_id],
                        last_claim_at=now + offset,
                    )
            events.append(conn, batch, EventType.STARTED, now)
            claimed.extend(batch)
            if not on_sqlite and len(claimed) < limit:
                # The statement dealt out every free slot of the accounts it could
                # lock; another would find the same (a round trip for nothing).
                break
    return claimed


_COMMIT_UNFLUSHED = Prepared(text("SET LOCAL synchronous_commit TO OFF"))


def commit_unflushed(conn: Connection) -> None:
    """Let this transaction's commit return before its WAL record is flushed
    (PostgreSQL; SQLite's commits do not wait for the disk already). For a step
    that only claims: the flush is the largest part of its commit, and the claim
    is on the path from a submit to its handler.

    The commit is visible at once, and durable within the WAL writer's delay
    (``wal_writer_delay``, 200 ms by default) or as soon as any later durable
    commit is (the WAL is flushed in order: the outcome of a task flushes its
    claim). A crash of the database server itself, not of a taskgate process,
    can lose the claims of its last moments whose tasks had not finished: those
    tasks are back in the queue as they were and run again (the first run's
    outcome is refused, its lease being gone), and their ``task.started`` events
    are gone, so a stream client that saw one sees another with the same seq.
    Submits, outcomes, credits and cancellations keep durable commits.
    """
    if conn.dialect.name == "postgresql":
        # Sent in one pipeline with the transaction's next statement.
        _COMMIT_UNFLUSHED.defer(conn)


def _start_sqlite(
    conn: Connection, *, queue: str, limit: int, claimer: str, now: int, lease_us: int
) -> list[Task]:
    """Start the tasks :func:`_quota` deals out, account by account."""
    batch: list[Task] = []
    for account_id, count in _quota(conn, queue=queue, limit=limit, now=now).items():
        rows = _CLAIM["start"].all(
            conn,
            account_id=account_id,
            queue=queue,
            limit=count,
            claimer=claimer,
            lease_expires_at=now + lease_us,
            now=now,
        )
        started = sorted(map(Task.from_mapping, rows), key=lambda t: (-t.priority, t.id))
        batch.extend(started)
    return batch


def _quota(conn: Connection, *, queue: str, limit: int, now: int) -> dict[str, int]:
    """How many tasks to start per account: the free slots dealt out one per account
    per round, accounts served longest ago first."""
    candidates = _CLAIM["candidates"].all(conn, queue=queue, now=now, limit=limit)
    free = {row["id"]: row[next(k for k in row if k != "id")] for row in candidates}
    quota = dict.fromkeys(free, 0)
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
    return quota


def _leave_running(conn: Connection, changed: Iterable[Task]) -> None:
    # In account order: two transactions that end tasks of the same accounts lock
    # the accounts' rows in the same order, and so never wait for each other in a
    # circle (PostgreSQL).
    for account_id, count in sorted(Counter(t.account_id for t in changed).items()):
        _CLAIM["leave"].defer(conn, account_id=account_id, count=count)


_FENCE = (
    (tasks.c.id == bindparam("lease_task"))
    & (tasks.c.status == TaskStatus.RUNNING.value)
    & (tasks.c.worker_id == bindparam("lease_worker"))
    & (tasks.c.attempts == bindparam("lease_attempt"))
)


def _fence(lease: Lease) -> dict[str, Any]:
    return {
        "lease_task": lease.task_id,
        "lease_worker": lease.worker_id,
        "lease_attempt": lease.attempt,
    }


_PROGRESS = Prepared(
    update(tasks)
    .where(_FENCE)
    .values(
        progress_percent=bindparam("percent"),
        progress_stage=bindparam("stage"),
        progress_message=bindparam("message"),
        updated_at=bindparam("now"),
        event_seq=tasks.c.event_seq + 1,
    )
    .returning(tasks)
)


def record_progress(
    conn: Connection, lease: Lease, percent: float, stage: str | None, message: str | None, now: int
) -> Task | None:
    row = _PROGRESS.first(
        conn, percent=percent, stage=stage, message=message, now=now, **_fence(lease)
    )
    if row is None:
        return None
    task = Task.from_mapping(row)
    events.append(conn, [task], EventType.PROGRESS, now)
    return task


def _keep(column: Any, name: str) -> Any:
    """``column`` set to the parameter ``name`` when given, left as it is when NULL."""
    return func.coalesce(bindparam(name, type_=column.type), column)


def _finish_statement(*, unless_cancel_requested: bool) -> Prepared:
    condition = _FENCE
    if unless_cancel_requested:
        # A cancel asked for while the attempt ran wins over its outcome.
        condition = condition & tasks.c.cancel_requested_at.is_(None)
    return Prepared(
        update(tasks)
        .where(condition)
        .values(
            status=bindparam("status"),
            updated_at=bindparam("now"),
            event_seq=tasks.c.event_seq + 1,
            lease_expires_at=None,
            completed_at=bindparam("completed_at"),
            worker_id=case((bindparam("requeue", type_=Boolean), None), else_=tasks.c.worker_id),
            run_at=_keep(tasks.c.run_at, "run_at"),
            progress_percent=_keep(tasks.c.progress_percent, "progress_percent"),
            progress_stage=_keep(tasks.c.progress_stage, "progress_stage"),
            progress_message=_keep(tasks.c.progress_message, "progress_message"),
            output=_keep(tasks.c.output, "output"),
            # Each outcome states its own error, usage and warnings: a task does not
            # keep those of an earlier, retried attempt.
            error=bindparam("error", type_=tasks.c.error.type),
            usage=bindparam("usage", type_=tasks.c.usage.type),
            warnings=bindparam("warnings", type_=tasks.c.warnings.type),
            **ledger.split(bindparam("charge", type_=BigInteger)),
        )
        .returning(tasks)
    )


_FINISH = _finish_statement(unless_cancel_requested=True)
_FINISH_CANCELLED = _finish_statement(unless_cancel_requested=False)


def finish(conn: Connection, outcome: Finish, now: int) -> Task | None:
    """Apply one attempt's outcome; None if the worker no longer holds the task."""
    done = finish_many(conn, [outcome], now)
    return done[0] if done else None


def finish_many(conn: Connection, outcomes: Sequence[Finish], now: int) -> list[Task]:
    """Apply attempts' outcomes; returns the tasks changed (the others were no
    longer held by their workers)."""
    # Every outcome's update in one batch (one round trip on PostgreSQL); the few
    # that match no row (a cancel asked for meanwhile, a lease lost) are settled
    # one by one after.
    planned = [_finish_plan(outcome, now) for outcome in outcomes]
    found: list[list[dict[str, Any]]] = [[] for _ in planned]
    for statement in (_FINISH, _FINISH_CANCELLED):
        indexes = [i for i, (chosen, _) in enumerate(planned) if chosen is statement]
        results = statement.all_many(conn, [planned[i][1] for i in indexes])
        for i, rows in zip(indexes, results, strict=True):
            found[i] = rows
    changed: list[tuple[Task, EventType]] = []
    for outcome, rows in zip(outcomes, found, strict=True):
        applied = (
            (Task.from_mapping(rows[0]), _finish_event(outcome))
            if rows
            else _apply_again(conn, outcome, now)
        )
        if applied is not None:
            changed.append(applied)
    for event_type in dict.fromkeys(kind for _, kind in changed):
        events.append(conn, [task for task, kind in changed if kind is event_type], event_type, now)
    # The accounts' rows last: on PostgreSQL another worker's transaction ending
    # tasks of the same account waits for this one's lock until it commits.
    left = [task for task, _ in changed]
    ledger.close(conn, (task for task in left if task.terminal), now)
    _leave_running(conn, left)
    return [task for task, _ in changed]


def _finish_event(outcome: Finish) -> EventType:
    if outcome.status is TaskStatus.QUEUED:
        return EventType.REQUEUED
    return TERMINAL_EVENT[outcome.status]


def _finish_plan(outcome: Finish, now: int) -> tuple[Prepared, dict[str, Any]]:
    """The statement that applies an outcome, and its parameters."""
    requeue = outcome.status is TaskStatus.QUEUED
    params: dict[str, Any] = {
        "status": outcome.status.value,
        "now": now,
        "completed_at": None if requeue else now,
        "requeue": requeue,
        "run_at": (outcome.retry_at or now) if requeue else None,
        "progress_percent": None,
        "progress_stage": None,
        "progress_message": None,
        "output": None,
        "error": outcome.error,
        "usage": outcome.usage,
        "warnings": outcome.warnings,
        # NULL leaves a requeued task's reservation open.
        "charge": None if requeue else 0,
        **_fence(outcome.lease),
    }
    if outcome.progress is not None:
        params["progress_percent"], params["progress_stage"], params["progress_message"] = (
            outcome.progress
        )
    if outcome.status is TaskStatus.COMPLETED:
        params["output"] = outcome.output or []
        params["progress_percent"] = 100.0
        params["charge"] = outcome.charge
    cancelled = outcome.status is TaskStatus.CANCELLED
    return (_FINISH_CANCELLED if cancelled else _FINISH), params


def _apply(conn: Connection, outcome: Finish, now: int) -> tuple[Task, EventType] | None:
    statement, params = _finish_plan(outcome, now)
    row = statement.first(conn, **params)
    if row is not None:
        return Task.from_mapping(row), _finish_event(outcome)
    return _apply_again(conn, outcome, now)


def _apply_again(conn: Connection, outcome: Finish, now: int) -> tuple[Task, EventType] | None:
    """An outcome whose update matched no row: as a cancellation if a cancel was
    asked for while the attempt ran, else nothing (the lease is gone)."""
    if outcome.status is TaskStatus.CANCELLED:
        return None
    # Either the lease is gone, or a cancel was asked for while the attempt ran.
    return _apply(
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


_RELEASE = Prepared(
    update(tasks)
    .where(_FENCE)
    .values(
        status=TaskStatus.QUEUED.value,
        attempts=tasks.c.attempts - 1,
        worker_id=None,
        lease_expires_at=None,
        run_at=bindparam("now"),
        updated_at=bindparam("now"),
        event_seq=tasks.c.event_seq + 1,
    )
    .returning(tasks)
)


def release(conn: Connection, leases: Sequence[Lease], now: int) -> list[Task]:
    """Put running tasks back in the queue without spending their attempt (drain)."""
    released: list[Task] = []
    for lease in leases:
        row = _RELEASE.first(conn, now=now, **_fence(lease))
        if row is not None:
            released.append(Task.from_mapping(row))
    _leave_running(conn, released)
    events.append(conn, released, EventType.REQUEUED, now)
    return released


_RENEW = Prepared(
    update(tasks)
    .where(_FENCE)
    .values(lease_expires_at=bindparam("lease_expires_at"))
    .returning(tasks.c.id, tasks.c.cancel_requested_at)
)


def renew(
    conn: Connection, leases: Sequence[Lease], now: int, lease_us: int
) -> dict[str, int | None]:
    """Extend the leases still held. Returns, for each task still held, when its
    cancellation was asked for (None if it was not); the others were lost."""
    held: dict[str, int | None] = {}
    for lease in leases:
        row = _RENEW.first(conn, lease_expires_at=now + lease_us, **_fence(lease))
        if row is not None:
            held[row["id"]] = row["cancel_requested_at"]
    return held


MAX_RETRY_DELAY_US = 600 * 1_000_000


def retry_delay_us(base_us: int, attempt: int) -> int:
    """Exponential backoff after the given attempt: base, 2×base, 4×base… ≤ 10 min."""
    return int(min(base_us * 2 ** (attempt - 1), MAX_RETRY_DELAY_US))


def recover_expired(conn: Connection, now: int, backoff_us: int, batch: int = 500) -> list[Task]:
    """Tasks whose lease ran out: retried while attempts are left (``worker_lost``
    is retryable), else failed; a task whose cancel was asked for is cancelled."""
    expired = [
        Task.from_mapping(row)
        for row in conn.execute(
            select(tasks)
            .where(
                status_is(tasks.c.status, TaskStatus.RUNNING.value),
                tasks.c.lease_expires_at < now,
            )
            .order_by(tasks.c.id)
            .limit(batch)
            # PostgreSQL: a row a worker is finishing right now is left to it (the
            # fence would refuse this change anyway) rather than waited for.
            .with_for_update(skip_locked=True)
        ).mappings()
    ]
    changed: list[Finish] = []
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
            retry_at = now + retry_delay_us(backoff_us, task.attempts)
            outcome = Finish(lease, TaskStatus.QUEUED, error=error, retry_at=retry_at)
        else:
            outcome = Finish(lease, TaskStatus.FAILED, error=error)
        changed.append(outcome)
    return finish_many(conn, changed, now)


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
