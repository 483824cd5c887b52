"""Purging terminal tasks with everything recorded about them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, exists, select

from taskgate.core.states import TERMINAL
from taskgate.store import deliveries
from taskgate.store.tables import events, files, task_inputs, tasks

_TERMINAL = [status.value for status in TERMINAL]


def terminal_before(conn: Connection, before: int, limit: int) -> list[str]:
    """Ids of terminal tasks that ended before ``before``, oldest first."""
    rows = conn.execute(
        select(tasks.c.id)
        .where(tasks.c.status.in_(_TERMINAL), tasks.c.completed_at < before)
        .order_by(tasks.c.completed_at)
        .limit(limit)
    )
    return [str(row[0]) for row in rows]


def purge_tasks(conn: Connection, task_ids: Sequence[str]) -> list[str]:
    """Delete terminal tasks, their events, webhook deliveries and attempts, output
    files, and the inputs fetched from URLs for them alone. Returns the blob keys of
    the deleted files (for the caller to delete once the transaction commits).

    A task that is not terminal is left as it is.
    """
    ids = list(task_ids)
    if not ids:
        return []
    ids = [
        str(row[0])
        for row in conn.execute(
            select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.status.in_(_TERMINAL))
        )
    ]
    if not ids:
        return []
    # Inputs fetched from a URL belong to the tasks that fetched them; uploads belong
    # to the account and stay.
    fetched = select(task_inputs.c.file_id).where(task_inputs.c.task_id.in_(ids))
    used_elsewhere = exists().where(
        task_inputs.c.file_id == files.c.id, task_inputs.c.task_id.not_in(ids)
    )
    doomed = [
        str(row[0])
        for row in conn.execute(
            select(files.c.id).where(
                ((files.c.purpose == "output") & files.c.task_id.in_(ids))
                | (files.c.id.in_(fetched) & files.c.source_url.is_not(None) & ~used_elsewhere)
            )
        )
    ]
    deliveries.remove_for_tasks(conn, ids)
    conn.execute(delete(events).where(events.c.task_id.in_(ids)))
    conn.execute(delete(task_inputs).where(task_inputs.c.task_id.in_(ids)))
    if doomed:
        conn.execute(delete(task_inputs).where(task_inputs.c.file_id.in_(doomed)))
        conn.execute(delete(files).where(files.c.id.in_(doomed)))
    conn.execute(delete(tasks).where(tasks.c.id.in_(ids)))
    return [f"files/{file_id}" for file_id in doomed]
