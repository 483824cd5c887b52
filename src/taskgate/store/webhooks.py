"""Webhook endpoints: where an account's events are delivered."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from taskgate.core.models import WebhookEndpoint
from taskgate.store.tables import webhook_endpoints

_TABLE = webhook_endpoints


def insert_endpoint(conn: Connection, endpoint: WebhookEndpoint) -> None:
    conn.execute(insert(_TABLE).values(**endpoint.to_dict()))


def get(conn: Connection, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    row = (
        conn.execute(
            select(_TABLE).where(_TABLE.c.id == endpoint_id, _TABLE.c.account_id == account_id)
        )
        .mappings()
        .first()
    )
    return WebhookEndpoint(**row) if row is not None else None


def list_page(
    conn: Connection, account_id: str, *, limit: int, before_id: str | None
) -> tuple[list[WebhookEndpoint], bool]:
    """Newest first; ``limit`` endpoints and whether more follow."""
    query = select(_TABLE).where(_TABLE.c.account_id == account_id)
    if before_id is not None:
        query = query.where(_TABLE.c.id < before_id)
    rows = conn.execute(query.order_by(_TABLE.c.id.desc()).limit(limit + 1)).mappings()
    found = [WebhookEndpoint(**row) for row in rows]
    return found[:limit], len(found) > limit


def change(conn: Connection, endpoint_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(_TABLE).where(_TABLE.c.id == endpoint_id).values(**values))


def remove(conn: Connection, endpoint_id: str) -> None:
    conn.execute(delete(_TABLE).where(_TABLE.c.id == endpoint_id))
