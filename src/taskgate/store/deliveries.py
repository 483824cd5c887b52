"""Deliveries of events to webhook endpoints and per-task callbacks, and their attempts.

A delivery is made once per (event, target) — the unique key makes a repeated
fan-out harmless. A deliverer takes due deliveries under a lease, so two deliverers
never attempt the same one at once, and a lost deliverer's take expires. Per target
and task, only the earliest pending delivery is due: a task's events arrive in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from taskgate.core.models import WebhookEndpoint
from taskgate.store.prepared import Prepared
from taskgate.store.tables import (
    accounts,
    outbox_cursors,
    status_is,
    tasks,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)

_D = webhook_deliveries
_A = webhook_attempts

#: The target of a task's callback (the other targets are webhook endpoint ids).
CALLBACK = "callback"


@dataclass(slots=True)
class Delivery:
    id: str
    account_id: str
    target: str
    endpoint_id: str | None
    task_id: str | None
    event_id: str
    event_type: str
    position: int | None
    url: str | None
    payload: str
    status: str
    attempt_count: int
    failures: int
    next_attempt_at: int | None
    leased_until: int | None
    last_status_code: int | None
    last_error: str | None
    created_at: int
    updated_at: int
    delivered_at: int | None


@dataclass(slots=True)
class Attempt:
    id: int
    delivery_id: str
    attempted_at: int
    status_code: int | None
    duration_ms: int
    error: str | None


@dataclass(slots=True)
class Taken:
    """A delivery taken for an attempt, with what sending it needs."""

    delivery: Delivery
    #: The endpoint (None for a callback, or when the endpoint is gone).
    endpoint: WebhookEndpoint | None
    #: The account's callback secret (callbacks only).
    callback_secret: str | None


# -- the fan-out cursor ---------------------------------------------------------


_CURSOR = Prepared(
    select(outbox_cursors.c.position).where(outbox_cursors.c.name == bindparam("name"))
)


def cursor(conn: Connection, name: str) -> int | None:
    found = _CURSOR.scalar(conn, name=name)
    return int(found) if found is not None else None


def start_cursor(conn: Connection, name: str, position: int) -> None:
    conn.execute(insert(outbox_cursors).values(name=name, position=position))


def advance_cursor(conn: Connection, name: str, before: int, after: int) -> bool:
    """Move the cursor from ``before`` to ``after``; False if another reader moved it
    first (the caller's transaction must then write nothing)."""
    moved = conn.execute(
        update(outbox_cursors)
        .where(outbox_cursors.c.name == name, outbox_cursors.c.position == before)
        .values(position=after)
    )
    return bool(moved.rowcount)


# -- writing deliveries -----------------------------------------------------------


def enabled_endpoints(
    conn: Connection, account_ids: Iterable[str]
) -> dict[str, list[WebhookEndpoint]]:
    """The enabled endpoints of these accounts, by account."""
    # Account by account: a batch of events is most often one account's, and the
    # statement is compiled once.
    found: dict[str, list[WebhookEndpoint]] = {}
    for account_id in sorted(set(account_ids)):
        rows = _ENABLED_ENDPOINTS.all(conn, account_id=account_id)
        if rows:
            found[account_id] = [WebhookEndpoint(**row) for row in rows]
    return found


_ENABLED_ENDPOINTS = Prepared(
    select(webhook_endpoints)
    .where(
        webhook_endpoints.c.account_id == bindparam("account_id"),
        webhook_endpoints.c.status == "enabled",
    )
    .order_by(webhook_endpoints.c.id)
)


def insert_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert deliveries; one already made for the same (event, target) is kept."""
    if not rows:
        return
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = module.insert(_D).on_conflict_do_nothing(index_elements=["event_id", "target"])
    conn.execute(statement, list(rows))


def ensure_callback_secrets(conn: Connection, secrets: dict[str, str]) -> None:
    """Give each account that has none the secret offered for it."""
    for account_id, secret in secrets.items():
        conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.callback_secret.is_(None))
            .values(callback_secret=secret)
        )


def callback_secret(conn: Connection, account_id: str) -> str | None:
    found = conn.execute(
        select(accounts.c.callback_secret).where(accounts.c.id == account_id)
    ).scalar()
    return str(found) if found is not None else None


# -- taking and settling ------------------------------------------------------------


def _ready() -> ColumnElement[bool]:
    """Pending, not taken at ``:now``, and the earliest pending delivery of its
    target and task."""
    earlier = _D.alias("earlier")
    now = bindparam("now", type_=_D.c.next_attempt_at.type)
    return and_(
        status_is(_D.c.status, "pending"),
        (_D.c.leased_until.is_(None)) | (_D.c.leased_until < now),
        ~exists().where(
            and_(
                status_is(earlier.c.status, "pending"),
                earlier.c.target == _D.c.target,
                earlier.c.task_id == _D.c.task_id,
                earlier.c.position < _D.c.position,
            )
        ),
    )


# Built and compiled once: the deliverer asks both after every batch of events,
# webhooks or not, on the API's event loop.
_DUE = Prepared(
    select(_D.c.id)
    .where(_D.c.next_attempt_at <= bindparam("now"), _ready())
    .order_by(_D.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=_D)
)
_NEXT_DUE = Prepared(select(func.min(_D.c.next_attempt_at).label("due")).where(_ready()))


def take_due(conn: Connection, now: int, limit: int, lease_until: int) -> list[Taken]:
    """Lease up to ``limit`` due deliveries, each the earliest pending one of its
    target and task, oldest due first.

    On PostgreSQL the rows are locked as they are chosen (``SKIP LOCKED``): two
    deliverers choosing at once would otherwise both read a delivery as free and
    both lease it. A row leased by a transaction that committed meanwhile is read
    again and no longer qualifies. (SQLite runs one write transaction at a time.)
    """
    ids = [row["id"] for row in _DUE.all(conn, now=now, limit=limit)]
    if not ids:
        return []
    conn.execute(update(_D).where(_D.c.id.in_(ids)).values(leased_until=lease_until))
    rows = conn.execute(select(_D).where(_D.c.id.in_(ids))).mappings()
    deliveries = [Delivery(**row) for row in rows]
    endpoint_ids = {d.endpoint_id for d in deliveries if d.endpoint_id is not None}
    endpoints = {
        row["id"]: WebhookEndpoint(**row)
        for row in conn.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.id.in_(endpoint_ids))
        ).mappings()
    }
    callback_accounts = {d.account_id for d in deliveries if d.target == CALLBACK}
    secrets = {
        row[0]: row[1]
        for row in conn.execute(
            select(accounts.c.id, accounts.c.callback_secret).where(
                accounts.c.id.in_(callback_accounts)
            )
        )
    }
    by_id = {d.id: d for d in deliveries}
    return [
        Taken(
            delivery=by_id[delivery_id],
            endpoint=endpoints.get(by_id[delivery_id].endpoint_id or ""),
            callback_secret=secrets.get(by_id[delivery_id].account_id)
            if by_id[delivery_id].target == CALLBACK
            else None,
        )
        for delivery_id in ids
        if delivery_id in by_id
    ]


def release(conn: Connection, delivery_ids: Sequence[str]) -> None:
    """Give back taken deliveries whose attempts were abandoned."""
    conn.execute(
        update(_D)
        .where(_D.c.id.in_(list(delivery_ids)), status_is(_D.c.status, "pending"))
        .values(leased_until=None)
    )


def next_due(conn: Connection, now: int) -> int | None:
    """When the next delivery that can be taken is due (None when there is none;
    a delivery waiting behind one in flight is not counted: that one's end wakes
    the deliverer)."""
    found = _NEXT_DUE.scalar(conn, now=now)
    return int(found) if found is not None else None


def record_attempt(
    conn: Connection,
    delivery_id: str,
    *,
    attempted_at: int,
    status_code: int | None,
    duration_ms: int,
    error: str | None,
) -> None:
    conn.execute(
        insert(_A).values(
            delivery_id=delivery_id,
            attempted_at=attempted_at,
            status_code=status_code,
            duration_ms=duration_ms,
            error=error,
        )
    )


def settle(conn: Connection, delivery_id: str, values: dict[str, Any]) -> bool:
    """Write an attempt's outcome to a delivery still leased; False when it is gone
    (its endpoint or task was deleted meanwhile)."""
    changed = conn.execute(
        update(_D).where(_D.c.id == delivery_id).values(leased_until=None, **values)
    )
    return bool(changed.rowcount)


def fail_pending_of_endpoint(conn: Connection, endpoint_id: str, reason: str, now: int) -> None:
    conn.execute(
        update(_D)
        .where(_D.c.endpoint_id == endpoint_id, status_is(_D.c.status, "pending"))
        .values(status="failed", last_error=reason, next_attempt_at=None, updated_at=now)
    )


_E = webhook_endpoints


def clear_failing(conn: Connection, endpoint_id: str) -> None:
    """An attempt succeeded: the endpoint's run of failures is over."""
    conn.execute(
        update(_E)
        .where(_E.c.id == endpoint_id, _E.c.failing_since.is_not(None))
        .values(failing_since=None)
    )


def mark_failing(conn: Connection, endpoint_id: str, now: int) -> int | None:
    """An attempt failed: start the endpoint's run of failures unless one is on;
    returns when the run started (None if the endpoint is gone)."""
    conn.execute(
        update(_E)
        .where(_E.c.id == endpoint_id, _E.c.failing_since.is_(None))
        .values(failing_since=now)
    )
    since = conn.execute(select(_E.c.failing_since).where(_E.c.id == endpoint_id)).scalar()
    return int(since) if since is not None else None


def disable_endpoint(conn: Connection, endpoint_id: str, reason: str, now: int) -> bool:
    """Disable an enabled endpoint; False if it was not enabled."""
    changed = conn.execute(
        update(_E)
        .where(_E.c.id == endpoint_id, _E.c.status == "enabled")
        .values(status="disabled", disabled_reason=reason, updated_at=now)
    )
    return bool(changed.rowcount)


def track_callback(
    conn: Connection,
    task_id: str,
    *,
    attempted: bool,
    error: str | None,
    status: str | None,
    delivered_at: int | None,
) -> None:
    """Update a task's callback state after an attempt."""
    values: dict[str, Any] = {}
    if attempted:
        values["callback_attempts"] = tasks.c.callback_attempts + 1
    if error is not None:
        values["callback_last_error"] = error
    if status is not None:
        values["callback_status"] = status
    if delivered_at is not None:
        values["callback_delivered_at"] = delivered_at
    if values:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))


# -- reading ------------------------------------------------------------------------


def get(conn: Connection, account_id: str, delivery_id: str) -> Delivery | None:
    row = (
        conn.execute(select(_D).where(_D.c.id == delivery_id, _D.c.account_id == account_id))
        .mappings()
        .first()
    )
    return Delivery(**row) if row is not None else None


def list_page(
    conn: Connection,
    endpoint_id: str,
    *,
    limit: int,
    before_id: str | None,
    status: str | None = None,
) -> tuple[list[Delivery], bool]:
    """An endpoint's deliveries, newest first; ``limit`` of them and whether more follow."""
    query = select(_D).where(_D.c.endpoint_id == endpoint_id)
    if before_id is not None:
        query = query.where(_D.c.id < before_id)
    if status is not None:
        query = query.where(_D.c.status == status)
    rows = conn.execute(query.order_by(_D.c.id.desc()).limit(limit + 1)).mappings()
    found = [Delivery(**row) for row in rows]
    return found[:limit], len(found) > limit


def attempts_of(conn: Connection, delivery_ids: Sequence[str]) -> dict[str, list[Attempt]]:
    """The attempts of these deliveries, oldest first, by delivery."""
    found: dict[str, list[Attempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return found
    rows = conn.execute(
        select(_A).where(_A.c.delivery_id.in_(list(delivery_ids))).order_by(_A.c.id)
    ).mappings()
    for row in rows:
        found[row["delivery_id"]].append(Attempt(**row))
    return found


def requeue(conn: Connection, delivery_id: str, now: int) -> None:
    """Make a delivery pending again, due now, at the start of its retry schedule."""
    conn.execute(
        update(_D)
        .where(_D.c.id == delivery_id)
        .values(
            status="pending", failures=0, next_attempt_at=now, leased_until=None, updated_at=now
        )
    )


def remove_for_endpoint(conn: Connection, endpoint_id: str) -> None:
    """Delete an endpoint's deliveries and their attempts."""
    owned = select(_D.c.id).where(_D.c.endpoint_id == endpoint_id).scalar_subquery()
    conn.execute(delete(_A).where(_A.c.delivery_id.in_(owned)))
    conn.execute(delete(_D).where(_D.c.endpoint_id == endpoint_id))


def remove_for_tasks(conn: Connection, task_ids: Sequence[str]) -> None:
    """Delete the deliveries of these tasks' events and their attempts."""
    if not task_ids:
        return
    owned = select(_D.c.id).where(_D.c.task_id.in_(list(task_ids))).scalar_subquery()
    conn.execute(delete(_A).where(_A.c.delivery_id.in_(owned)))
    conn.execute(delete(_D).where(_D.c.task_id.in_(list(task_ids))))
