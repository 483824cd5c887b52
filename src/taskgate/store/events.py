"""The outbox: one event row per task change, written in the change's transaction.

Readers follow the outbox by *position*: "everything after position p" must never
miss a row that commits later, and a task's events come in the order of their seq.

On SQLite the position is the rowid: one writer at a time, and a new row's rowid
is one more than the largest, so rowid order is commit order.

On PostgreSQL no number taken inside a transaction is in commit order (a
transaction that took a sequence value or an id early may commit late), so a
reader does not follow commits; it follows a *visibility horizon*:

- Each event's position is ``x << 20 | n``. ``x`` is the writing transaction's id
  (``pg_current_xact_id()``) and ``n`` the low 20 bits of a sequence, which keeps
  apart the positions of one transaction's events.
- Except that a task's events must be in seq order, and a transaction that took
  its id early may write a task's next event after a younger transaction
  committed its previous one. When the task's previous event has the larger
  ``x``, the new event takes that ``x`` and an ``n`` above the previous one's (the
  sequence has moved on since that committed, so ``n`` is the sequence's unless
  its low bits wrapped; a clash then is an error of the unique index, never a
  silent overwrite).
- A reader is handed only positions below ``xmin << 20``, where ``xmin`` is the
  oldest transaction still running when its statement's snapshot was taken
  (``pg_snapshot_xmin(pg_current_snapshot())``). Every transaction older than
  that has ended, so every event below the horizon that will ever be visible is
  visible now, and any event that commits later has ``x`` at least its
  transaction's id, which is at least ``xmin``: its position is above everything
  handed out (``x`` is never below the writer's own id, and always the id of a
  transaction, so it falls below the horizon once that one and all older ones
  end). The horizon only moves up.

The price: an event is handed out only once every transaction that took an id
before its own has ended (read-only transactions take none), so a long writing
transaction anywhere on the server (a stalled process, a migration) delays events
until it ends; taskgate's connections end transactions left idle for a minute
(``store/postgres.py``). Such an older transaction may end without waking the
readers, so a reader that finds committed events held back (:func:`tail_held`)
looks again soon instead of at its next poll. Positions fit in 63 bits while
the server's transaction ids stay below 2^43 (2,048 wraparound epochs). In the
rare case that a task's previous event has the largest ``n`` of its ``x``, the
next one spills into ``x + 1`` and waits for that transaction id to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    true,
)

from taskgate.core.ids import new_id
from taskgate.core.models import Event, Task
from taskgate.store.prepared import Prepared
from taskgate.store.tables import events

#: What an event is, without its place in the outbox.
_EVENT = [c for c in events.c if c.name != "position"]
_SQLITE_INSERT = Prepared(insert(events).values({c.name: bindparam(c.name) for c in _EVENT}))
_LOW = (1 << 20) - 1
_PG_INSERT = Prepared(
    text(
        "INSERT INTO events (id, task_id, account_id, seq, type, created_at, data, position)"
        " SELECT :id, :task_id, :account_id, :seq, :type, :created_at, :data,"
        "  CASE WHEN previous.x IS NULL OR previous.x < own.x"
        "   THEN (own.x << 20) | own.n"
        f"   ELSE (previous.x << 20) + GREATEST(own.n, (previous.position & {_LOW}) + 1) END"
        " FROM (SELECT pg_current_xact_id()::text::bigint AS x,"
        f"             nextval('events_position_seq') & {_LOW} AS n) AS own"
        " LEFT JOIN (SELECT position, position >> 20 AS x FROM events"
        "            WHERE task_id = :task_id ORDER BY seq DESC LIMIT 1) AS previous ON true"
    ).bindparams(*(bindparam(c.name, type_=c.type) for c in _EVENT))
)


def append(conn: Connection, changed: Sequence[Task], type_: str, now: int) -> None:
    """Record that each task in ``changed`` (its row after the change) changed.

    The caller has already advanced each task's ``event_seq``; it is the event's seq.
    """
    statement = _SQLITE_INSERT if conn.dialect.name == "sqlite" else _PG_INSERT
    # (on PostgreSQL sent with the transaction's next statement or its commit)
    statement.defer_many(
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
        select(*_EVENT)
        .where(events.c.task_id == task_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    ).mappings()
    return [Event(**dict(row)) for row in rows]


class _Outbox:
    """The position, and the statements that follow it, in one dialect."""

    def __init__(self, position: ColumnElement[Any], horizon: ColumnElement[bool] | None) -> None:
        self.position = position
        self.visible: list[ColumnElement[bool]] = [] if horizon is None else [horizon]
        labelled = position.label("position")
        self.following = (
            select(labelled, *_EVENT)
            .where(position > bindparam("after"), *self.visible)
            .order_by(position)
            .limit(bindparam("limit"))
        )
        self.tail = Prepared(self.following)
        self.head = Prepared(
            select(func.coalesce(func.max(position), 0)).select_from(events).where(*self.visible)
        )
        self.columns = (labelled, *_EVENT)


_ROWID = literal_column("rowid", type_=BigInteger)
_HORIZON = literal_column(
    "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)", type_=BigInteger
)
_OUTBOX = {
    "sqlite": _Outbox(_ROWID, None),
    "postgresql": _Outbox(events.c.position, events.c.position < _HORIZON),
}


def head(conn: Connection) -> int:
    """The position of the latest event a reader may be handed (0 when there is
    none): a reader that starts there misses nothing that commits later."""
    return int(_OUTBOX[conn.dialect.name].head.scalar(conn))


def tail(conn: Connection, after: int, limit: int = 1000) -> list[tuple[int, Event]]:
    """Events after position ``after``, in position order, with their positions;
    an event that commits later has a position above every one returned."""
    found = []
    for row in _OUTBOX[conn.dialect.name].tail.all(conn, after=after, limit=limit):
        position = row.pop("position")
        found.append((int(position), Event(**row)))
    return found


_HELD = (
    select(events.c.position)
    .where(events.c.position > bindparam("after"), events.c.position >= _HORIZON)
    .exists()
    .label("held")
)
_VISIBLE = _OUTBOX["postgresql"].following.lateral("visible")
# The visible events after ``after`` and, in the same statement (so with the same
# horizon), whether others have committed that the horizon holds back: a row with
# only ``held`` when there are no visible ones.
_TAIL_HELD = Prepared(
    select(_HELD, *_VISIBLE.c)
    .select_from(select(literal_column("1")).subquery("one").outerjoin(_VISIBLE, true()))
    .order_by(_VISIBLE.c.position)
)


def tail_held(
    conn: Connection, after: int, limit: int = 1000
) -> tuple[list[tuple[int, Event]], bool]:
    """:func:`tail`, and whether an event after ``after`` has committed but is not
    handed out yet: held back by the horizon until every older transaction on the
    server has ended (PostgreSQL; never on SQLite). Such an ending wakes nobody, so
    a reader that finds events held back looks again soon."""
    if conn.dialect.name != "postgresql":
        return tail(conn, after, limit), False
    found = []
    held = False
    for row in _TAIL_HELD.all(conn, after=after, limit=limit):
        held = bool(row.pop("held"))
        position = row.pop("position")
        if position is not None:
            found.append((int(position), Event(**row)))
    return found, held


def for_account(
    conn: Connection, account_id: str, after_event_id: str | None, limit: int = 1000
) -> list[tuple[int, Event]]:
    """An account's events after the one with ``after_event_id`` (all of them when
    None), in position order, with their positions; as :func:`tail`, an event that
    commits later has a position above every one returned."""
    outbox = _OUTBOX[conn.dialect.name]
    query = select(*outbox.columns).where(events.c.account_id == account_id, *outbox.visible)
    if after_event_id is not None:
        after = (
            select(outbox.position)
            .select_from(events)
            .where(events.c.id == after_event_id, events.c.account_id == account_id)
            .scalar_subquery()
        )
        query = query.where(outbox.position > after)
    rows = conn.execute(query.order_by(outbox.position).limit(limit)).mappings()
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
