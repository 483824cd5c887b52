"""The outbox: one event row per task change, written in the change's transaction.

Readers follow the outbox by *position*: the order in which rows were committed.
On SQLite that is the rowid (one writer at a time, and a new row's rowid is one
more than the largest), so "everything after position p" never misses a row that
commits later.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, func, insert, literal_column, select

from taskgate.core.ids import new_id
from taskgate.core.models import Event, Task
from taskgate.store.prepared import Prepared
from taskgate.store.tables import events

_INSERT = Prepared(insert(events))


def append(conn: Connection, changed: Sequence[Task], type_: str, now: int) -> None:
    """Record that each task in ``changed`` (its row after the change) changed.

    The caller has already advanced each task's ``event_seq``; it is the event's seq.
    """
    _INSERT.execute_many(
        conn,
        [
            {
                "id": new_id("evt"),
                "task_id": task.id,
                "account_id": task.account_id,
                "seq": task.event_seq,
                "type": type_,
                "created_at": now,
                "data": task.to_dict(),
            }
            for task in changed
        ],
    )


def for_task(conn: Connection, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
    rows = conn.execute(
        select(events)
        .where(events.c.task_id == task_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    ).mappings()
    return [Event(**dict(row)) for row in rows]


_POSITION = literal_column("rowid", type_=events.c.seq.type).label("position")
_TAIL = Prepared(
    select(_POSITION, events)
    .where(literal_column("rowid") > bindparam("after"))
    .order_by(literal_column("rowid"))
    .limit(bindparam("limit"))
)
_HEAD = Prepared(select(func.coalesce(func.max(literal_column("rowid")), 0)).select_from(events))


def head(conn: Connection) -> int:
    """The position of the latest event (0 when there is none)."""
    return int(_HEAD.scalar(conn))


def tail(conn: Connection, after: int, limit: int = 1000) -> list[tuple[int, Event]]:
    """Events committed after ``position``, in commit order, with their positions."""
    found = []
    for row in _TAIL.all(conn, after=after, limit=limit):
        position = row.pop("position")
        found.append((int(position), Event(**row)))
    return found


def for_account(
    conn: Connection, account_id: str, after_event_id: str | None, limit: int = 1000
) -> list[tuple[int, Event]]:
    """An account's events after the one with ``after_event_id`` (all of them when
    None), in commit order, with their positions. None if that event is unknown."""
    query = select(_POSITION, events).where(events.c.account_id == account_id)
    if after_event_id is not None:
        after = (
            select(literal_column("rowid"))
            .select_from(events)
            .where(events.c.id == after_event_id, events.c.account_id == account_id)
            .scalar_subquery()
        )
        query = query.where(literal_column("rowid") > after)
    rows = conn.execute(query.order_by(literal_column("rowid")).limit(limit)).mappings()
    found = []
    for row in rows:
        values = dict(row)
        position = values.pop("position")
        found.append((int(position), Event(**values)))
    return found


def exists(conn: Connection, account_id: str, event_id: str) -> bool:
    row = conn.execute(
        select(events.c.id).where(events.c.id == event_id, events.c.account_id == account_id)
    ).first()
    return row is not None
