"""Task rows as the API sees them: submit, read, list, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from taskgate.core.models import Event, Task
from taskgate.core.states import EventType, TaskStatus
from taskgate.store import events
from taskgate.store.dialects import insert_or_ignore
from taskgate.store.prepared import Prepared
from taskgate.store.tables import accounts, tasks
from taskgate.store.tables import events as events_table

QUEUE_POSITION_CAP = 10_000
_TERMINAL = [TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value]


def insert(conn: Connection, task: Task) -> tuple[Task, bool]:
    """Insert a new task and its ``task.created`` event.

    With an ``out_task_id`` that the account already used, nothing is written and
    the existing task is returned with False.
    """
    values = task.to_dict()
    if task.out_task_id is not None:
        inserted = insert_or_ignore(
            conn,
            tasks,
            values,
            index_elements=["account_id", "out_task_id"],
            index_where=tasks.c.out_task_id.isnot(None),
        )
        if not inserted:
            existing = get_by_out_task_id(conn, task.account_id, task.out_task_id)
            assert existing is not None, "conflicting row must exist"
            return existing, False
    else:
        conn.execute(tasks.insert().values(**values))
    events.append(conn, [task], EventType.CREATED, task.created_at)
    return task, True


_GET = Prepared(select(tasks).where(tasks.c.id == bindparam("task_id")))
_GET_OWNED = Prepared(
    select(tasks).where(
        tasks.c.id == bindparam("task_id"), tasks.c.account_id == bindparam("account_id")
    )
)


def get(conn: Connection, task_id: str, account_id: str | None = None) -> Task | None:
    if account_id is None:
        row = _GET.first(conn, task_id=task_id)
    else:
        row = _GET_OWNED.first(conn, task_id=task_id, account_id=account_id)
    return Task.from_mapping(row) if row is not None else None


def get_by_out_task_id(conn: Connection, account_id: str, out_task_id: str) -> Task | None:
    row = (
        conn.execute(
            select(tasks).where(
                tasks.c.account_id == account_id, tasks.c.out_task_id == out_task_id
            )
        )
        .mappings()
        .first()
    )
    return Task.from_mapping(row) if row is not None else None


def list_page(
    conn: Connection,
    account_id: str,
    *,
    limit: int,
    before_id: str | None = None,
    statuses: Sequence[str] | None = None,
    workflow: str | None = None,
    created_after: int | None = None,
    created_before: int | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[list[Task], bool]:
    """Newest first; ``limit`` tasks and whether more follow."""
    conditions: list[Any] = [tasks.c.account_id == account_id]
    if before_id is not None:
        conditions.append(tasks.c.id < before_id)
    if statuses:
        conditions.append(tasks.c.status.in_(list(statuses)))
    if workflow is not None:
        conditions.append(tasks.c.workflow == workflow)
    if created_after is not None:
        conditions.append(tasks.c.created_at > created_after)
    if created_before is not None:
        conditions.append(tasks.c.created_at < created_before)
    for key, value in (metadata or {}).items():
        conditions.append(tasks.c.metadata[key].as_string() == value)
    rows = conn.execute(
        select(tasks).where(and_(*conditions)).order_by(tasks.c.id.desc()).limit(limit + 1)
    ).mappings()
    found = [Task.from_mapping(row) for row in rows]
    return found[:limit], len(found) > limit


def _bump(now: int) -> dict[str, Any]:
    return {"updated_at": now, "event_seq": tasks.c.event_seq + 1}


def cancel_queued(conn: Connection, task_id: str, now: int) -> Task | None:
    """queued → cancelled, with its event; None if the task was not queued."""
    row = (
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.QUEUED)
            .values(status=TaskStatus.CANCELLED, completed_at=now, **_bump(now))
            .returning(tasks)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    task = Task.from_mapping(row)
    events.append(conn, [task], EventType.CANCELLED, now)
    return task


def request_cancel(conn: Connection, task_id: str, now: int) -> Task | None:
    """Mark a running task for cancellation, with its event; None if not running."""
    row = (
        conn.execute(
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status == TaskStatus.RUNNING,
                tasks.c.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=now, **_bump(now))
            .returning(tasks)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    task = Task.from_mapping(row)
    events.append(conn, [task], EventType.CANCEL_REQUESTED, now)
    return task


def delete_terminal(conn: Connection, task_id: str) -> None:
    conn.execute(
        tasks.delete().where(
            tasks.c.id == task_id,
            tasks.c.status.in_(_TERMINAL),
        )
    )
    conn.execute(events_table.delete().where(events_table.c.task_id == task_id))


def queue_position(conn: Connection, task: Task) -> tuple[int, int]:
    """(tasks claimed before this one, of them in its own account), both capped.

    Claims take turns between accounts, so before this task, which has ``k``
    queued tasks ahead of it in its account, each other account gets up to ``k``
    of its own queued tasks claimed.
    """
    ahead_condition = or_(
        tasks.c.priority > task.priority,
        and_(tasks.c.priority == task.priority, tasks.c.id < task.id),
    )
    own = conn.execute(
        select(func.count()).select_from(
            select(tasks.c.id)
            .where(
                tasks.c.account_id == task.account_id,
                tasks.c.status == TaskStatus.QUEUED,
                ahead_condition,
            )
            .limit(QUEUE_POSITION_CAP)
            .subquery()
        )
    ).scalar_one()
    # Round robin: accounts whose turn comes before this account's get one more.
    mine = conn.execute(
        select(accounts.c.last_claim_at).where(accounts.c.id == task.account_id)
    ).scalar_one()
    total = own
    others = conn.execute(
        select(accounts.c.id, accounts.c.last_claim_at).where(accounts.c.id != task.account_id)
    ).all()
    for other_id, other_last in others:
        if total >= QUEUE_POSITION_CAP:
            break
        first = _turn_key(other_last, other_id) < _turn_key(mine, task.account_id)
        cap = own + 1 if first else own
        if cap == 0:
            continue
        total += conn.execute(
            select(func.count()).select_from(
                select(tasks.c.id)
                .where(tasks.c.account_id == other_id, tasks.c.status == TaskStatus.QUEUED)
                .limit(cap)
                .subquery()
            )
        ).scalar_one()
    return min(total, QUEUE_POSITION_CAP), own


def _turn_key(last_claim_at: int | None, account_id: str) -> tuple[int, str]:
    # The claim orders accounts by last_claim_at NULLS FIRST, then id.
    return (-1 if last_claim_at is None else last_claim_at, account_id)


def event_list(conn: Connection, task_id: str, after_seq: int = 0) -> list[Event]:
    return events.for_task(conn, task_id, after_seq)
