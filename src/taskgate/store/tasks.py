"""Task rows as the API sees them: submit, read, list, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    and_,
    bindparam,
    func,
    literal,
    select,
    update,
)
from sqlalchemy import insert as sql_insert

from taskgate.core.models import Task
from taskgate.core.states import EventType, TaskStatus
from taskgate.store import events, ledger
from taskgate.store.dialects import InsertUnlessConflict
from taskgate.store.prepared import Prepared
from taskgate.store.tables import accounts, status_is, tasks
from taskgate.store.tables import events as events_table

QUEUE_POSITION_CAP = 10_000
_TERMINAL = [TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value]


_INSERT = Prepared(sql_insert(tasks))
_INSERT_UNLESS_KEY_USED = InsertUnlessConflict(
    tasks,
    index_elements=["account_id", "out_task_id"],
    index_where=tasks.c.out_task_id.isnot(None),
)


def insert(conn: Connection, task: Task) -> tuple[Task, bool]:
    """Insert a new task, its ``task.created`` event, and its reservation (which
    raises InsufficientCredits if the account cannot cover it; the caller's
    transaction then writes nothing).

    With an ``out_task_id`` that the account already used, nothing is written and
    the existing task is returned with False. A concurrent duplicate waits for the
    first transaction and then does nothing (it committed) or inserts (it rolled
    back), unlike a check-then-insert.
    """
    values = task.to_dict()
    if task.out_task_id is not None:
        inserted = _INSERT_UNLESS_KEY_USED.execute(conn, **values)
        if not inserted:
            existing = get_by_out_task_id(conn, task.account_id, task.out_task_id)
            assert existing is not None, "conflicting row must exist"
            return existing, False
    else:
        # Nothing reads its result: on PostgreSQL it goes with the next statement
        # (the reservation) or with the COMMIT.
        _INSERT.defer(conn, **values)
    ledger.reserve(conn, task, task.created_at)
    events.append(conn, [task], EventType.CREATED, task.created_at)
    return task, True


_GET = Prepared(select(tasks).where(tasks.c.id == bindparam("task_id")))
_GET_OWNED = Prepared(
    select(tasks).where(
        tasks.c.id == bindparam("task_id"), tasks.c.account_id == bindparam("account_id")
    )
)


_GET_OWNED_FOR_UPDATE = Prepared(
    select(tasks)
    .where(tasks.c.id == bindparam("task_id"), tasks.c.account_id == bindparam("account_id"))
    .with_for_update()
)


def get(conn: Connection, task_id: str, account_id: str | None = None) -> Task | None:
    if account_id is None:
        row = _GET.first(conn, task_id=task_id)
    else:
        row = _GET_OWNED.first(conn, task_id=task_id, account_id=account_id)
    return Task.from_mapping(row) if row is not None else None


def get_for_update(conn: Connection, task_id: str, account_id: str) -> Task | None:
    """An account's task, its row locked until the transaction ends, so that no
    worker claims or finishes it meanwhile (PostgreSQL; on SQLite the write
    transaction already holds the database's lock)."""
    row = _GET_OWNED_FOR_UPDATE.first(conn, task_id=task_id, account_id=account_id)
    return Task.from_mapping(row) if row is not None else None


_GET_BY_OUT_TASK_ID = Prepared(
    select(tasks).where(
        tasks.c.account_id == bindparam("account_id"),
        tasks.c.out_task_id == bindparam("out_task_id"),
    )
)


def get_by_out_task_id(conn: Connection, account_id: str, out_task_id: str) -> Task | None:
    row = _GET_BY_OUT_TASK_ID.first(conn, account_id=account_id, out_task_id=out_task_id)
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
            .values(
                status=TaskStatus.CANCELLED,
                completed_at=now,
                **ledger.split(literal(0, BigInteger)),
                **_bump(now),
            )
            .returning(tasks)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    task = Task.from_mapping(row)
    ledger.close(conn, [task], now)
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


_COUNT_QUEUED = Prepared(
    select(func.count())
    .select_from(tasks)
    .where(
        tasks.c.account_id == bindparam("account_id"),
        status_is(tasks.c.status, TaskStatus.QUEUED.value),
    )
)


def count_queued(conn: Connection, account_id: str) -> int:
    return int(_COUNT_QUEUED.scalar(conn, account_id=account_id))


def _bounded_count(condition: Any) -> Select[Any]:
    """How many tasks meet ``condition``, counting no further than ``:cap``."""
    return select(func.count()).select_from(
        select(tasks.c.id).where(condition).limit(bindparam("cap")).subquery()
    )


_QUEUED_IN = (tasks.c.account_id == bindparam("account_id")) & status_is(
    tasks.c.status, TaskStatus.QUEUED.value
)
# Two range scans of the claim index (higher priority; same priority and older),
# each stopping at the cap, rather than one scan filtered by an OR.
_AHEAD_HIGHER = _bounded_count(_QUEUED_IN & (tasks.c.priority > bindparam("priority")))
_AHEAD_SAME = _bounded_count(
    _QUEUED_IN & (tasks.c.priority == bindparam("priority")) & (tasks.c.id < bindparam("id"))
)
_QUEUED = Prepared(_bounded_count(_QUEUED_IN))
_ACCOUNT_TURNS = Prepared(select(accounts.c.id, accounts.c.last_claim_at))
# Every account's place in the turns and its queued tasks up to a cap, in one
# statement: a range scan of the claim index per account, each stopping at the cap.
_QUEUED_PER_ACCOUNT = Prepared(
    select(
        accounts.c.id,
        accounts.c.last_claim_at,
        select(func.count())
        .select_from(
            select(tasks.c.id)
            .where(
                tasks.c.account_id == accounts.c.id,
                status_is(tasks.c.status, TaskStatus.QUEUED.value),
            )
            .correlate(accounts)
            .limit(bindparam("cap"))
            .subquery()
        )
        .scalar_subquery()
        .label("queued"),
    ).where(accounts.c.id != bindparam("account_id"))
)
# Where the task stands in its own account, and the account's place in the turns,
# in one statement (one round trip on PostgreSQL).
_PLACE = Prepared(
    select(
        _AHEAD_HIGHER.scalar_subquery().label("higher"),
        _AHEAD_SAME.scalar_subquery().label("same"),
        select(func.count()).select_from(accounts).scalar_subquery().label("accounts"),
        select(accounts.c.last_claim_at)
        .where(accounts.c.id == bindparam("account_id"))
        .scalar_subquery()
        .label("mine"),
        select(accounts.c.concurrency_limit)
        .where(accounts.c.id == bindparam("account_id"))
        .scalar_subquery()
        .label("slots"),
    )
)
# Past this many index entries in all, the accounts are counted one by one, each
# count stopping once the position reaches its cap.
_ONE_STATEMENT_SCAN = 4 * QUEUE_POSITION_CAP


class QueuePlace(NamedTuple):
    #: Tasks claimed before this one (capped at ``QUEUE_POSITION_CAP``).
    position: int
    #: Of them, in the task's own account.
    own_ahead: int
    #: The account's concurrency limit (its tasks run this many at a time).
    slots: int


def queue_position(
    conn: Connection, task: Task, *, one_statement_scan: int = _ONE_STATEMENT_SCAN
) -> QueuePlace:
    """Tasks claimed before this one, of them in its own account (both capped), and
    the account's concurrency limit.

    Claims take turns between accounts, so before this task, which has ``k``
    queued tasks ahead of it in its account, each other account gets up to ``k``
    of its own queued tasks claimed (``k + 1`` if its turn comes first).
    """
    place = _PLACE.first(
        conn,
        account_id=task.account_id,
        priority=task.priority,
        id=task.id,
        cap=QUEUE_POSITION_CAP,
    )
    assert place is not None
    own = min(int(place["higher"]) + int(place["same"]), QUEUE_POSITION_CAP)
    slots = int(place["slots"] or 1)
    mine = _turn_key(place["mine"], task.account_id)
    others = int(place["accounts"]) - 1
    total = own
    if (own + 1) * others <= one_statement_scan:
        for row in _QUEUED_PER_ACCOUNT.all(conn, account_id=task.account_id, cap=own + 1):
            cap = own + 1 if _turn_key(row["last_claim_at"], row["id"]) < mine else own
            total += min(int(row["queued"]), cap)
        return QueuePlace(min(total, QUEUE_POSITION_CAP), own, slots)
    turns = {row["id"]: row["last_claim_at"] for row in _ACCOUNT_TURNS.all(conn)}
    turns.pop(task.account_id, None)
    for other_id, other_last in turns.items():
        if total >= QUEUE_POSITION_CAP:
            break
        cap = own + 1 if _turn_key(other_last, other_id) < mine else own
        if cap:
            total += int(_QUEUED.scalar(conn, account_id=other_id, cap=cap))
    return QueuePlace(min(total, QUEUE_POSITION_CAP), own, slots)


def _turn_key(last_claim_at: int | None, account_id: str) -> tuple[int, str]:
    # The claim orders accounts by last_claim_at NULLS FIRST, then id.
    return (-1 if last_claim_at is None else last_claim_at, account_id)
