"""File rows: uploaded inputs, produced outputs, and the inputs each task refers to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, insert, or_, select, update

from taskgate.core.models import StoredFile
from taskgate.core.states import TaskStatus
from taskgate.store.tables import accounts, files, task_inputs, tasks

_LIVE = [TaskStatus.QUEUED.value, TaskStatus.RUNNING.value]


def _record(row: Any) -> StoredFile:
    return StoredFile(**row)


def insert_files(conn: Connection, records: Sequence[StoredFile]) -> None:
    if records:
        conn.execute(insert(files), [record.to_dict() for record in records])


def get(conn: Connection, account_id: str, file_id: str) -> StoredFile | None:
    row = (
        conn.execute(select(files).where(files.c.id == file_id, files.c.account_id == account_id))
        .mappings()
        .first()
    )
    return _record(row) if row is not None else None


def get_by_id(conn: Connection, file_id: str) -> StoredFile | None:
    row = conn.execute(select(files).where(files.c.id == file_id)).mappings().first()
    return _record(row) if row is not None else None


def get_many(conn: Connection, account_id: str, file_ids: Iterable[str]) -> dict[str, StoredFile]:
    wanted = list(set(file_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(files).where(files.c.id.in_(wanted), files.c.account_id == account_id)
    ).mappings()
    return {str(row["id"]): _record(row) for row in rows}


def list_page(
    conn: Connection,
    account_id: str,
    *,
    limit: int,
    before_id: str | None = None,
    purpose: str | None = None,
    task_id: str | None = None,
) -> tuple[list[StoredFile], bool]:
    """Newest first; ``limit`` files and whether more follow."""
    query = select(files).where(files.c.account_id == account_id)
    if before_id is not None:
        query = query.where(files.c.id < before_id)
    if purpose is not None:
        query = query.where(files.c.purpose == purpose)
    if task_id is not None:
        query = query.where(files.c.task_id == task_id)
    rows = conn.execute(query.order_by(files.c.id.desc()).limit(limit + 1)).mappings()
    found = [_record(row) for row in rows]
    return found[:limit], len(found) > limit


def in_use(conn: Connection, file_id: str) -> bool:
    """Whether a task that is not yet terminal refers to the file."""
    query = select(
        exists().where(
            task_inputs.c.file_id == file_id,
            task_inputs.c.task_id == tasks.c.id,
            tasks.c.status.in_(_LIVE),
        )
    )
    return bool(conn.execute(query).scalar())


def remove(conn: Connection, file_id: str) -> None:
    """Delete a file's row and the references of (terminal) tasks to it."""
    conn.execute(delete(task_inputs).where(task_inputs.c.file_id == file_id))
    conn.execute(delete(files).where(files.c.id == file_id))


def link_inputs(
    conn: Connection, task_id: str, refs: Mapping[str, str], *, keep_until: int
) -> None:
    """Record which files a task's input refers to (``ref`` → file id), and keep them
    at least until ``keep_until``."""
    if not refs:
        return
    conn.execute(
        insert(task_inputs),
        [{"task_id": task_id, "ref": ref, "file_id": file_id} for ref, file_id in refs.items()],
    )
    conn.execute(
        update(files)
        .where(files.c.id.in_(list(set(refs.values()))), files.c.expires_at < keep_until)
        .values(expires_at=keep_until)
    )


def inputs_of(conn: Connection, task_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """For each task, its input refs and the files they resolved to."""
    found: dict[str, dict[str, str]] = {}
    if not task_ids:
        return found
    rows = conn.execute(
        select(task_inputs.c.task_id, task_inputs.c.ref, task_inputs.c.file_id).where(
            task_inputs.c.task_id.in_(list(task_ids))
        )
    )
    for task_id, ref, file_id in rows:
        found.setdefault(task_id, {})[ref] = file_id
    return found


def output_retention(conn: Connection, account_id: str) -> int | None:
    """The account's output retention in seconds, None for the server's default."""
    value = conn.execute(
        select(accounts.c.output_retention_seconds).where(accounts.c.id == account_id)
    ).scalar()
    return int(value) if value is not None else None


def due_for_expiry(conn: Connection, now: int, input_grace_us: int, limit: int) -> list[StoredFile]:
    """Files whose blobs retention should delete now: outputs past their expiry;
    inputs past theirs that no task still needs (no live task refers to them, and
    none that ended less than ``input_grace_us`` ago)."""
    still_needed = exists().where(
        task_inputs.c.file_id == files.c.id,
        task_inputs.c.task_id == tasks.c.id,
        or_(
            tasks.c.status.in_(_LIVE),
            tasks.c.completed_at > now - input_grace_us,
        ),
    )
    query = (
        select(files)
        .where(
            files.c.expired_at.is_(None),
            files.c.expires_at <= now,
            or_(files.c.purpose == "output", and_(files.c.purpose == "input", ~still_needed)),
        )
        .order_by(files.c.expires_at)
        .limit(limit)
    )
    return [_record(row) for row in conn.execute(query).mappings()]


def mark_expired(conn: Connection, file_ids: Sequence[str], now: int) -> None:
    if file_ids:
        conn.execute(
            update(files)
            .where(files.c.id.in_(list(file_ids)), files.c.expired_at.is_(None))
            .values(expired_at=now)
        )
