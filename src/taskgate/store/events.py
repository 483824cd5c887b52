"""The outbox: one event row per task change, written in the change's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, insert, select

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
