"""Read-only looks at a data dir's database from the bench process (SQLite WAL readers
never wait for the server's or the worker's writes), or at a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from taskgate.settings import Settings
from taskgate.store import queue
from taskgate.store.db import Database
from taskgate.store.tables import events, tasks


class Probe:
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        url = Settings(data_dir=data_dir, database_url=database_url).resolved_database_url
        self.db = Database(url, pool_size=1)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def event_count(self) -> int:
        return int(
            self.db.read_sync(
                lambda c: c.execute(select(func.count()).select_from(events)).scalar_one()
            )
        )

    def task_count(self, status: str | None = None) -> int:
        stmt = select(func.count()).select_from(tasks)
        if status is not None:
            stmt = stmt.where(tasks.c.status == status)
        return int(self.db.read_sync(lambda c: c.execute(stmt).scalar_one()))

    def unfinished(self) -> int:
        """Queued and running tasks, from their partial indexes."""
        return sum(self.db.read_sync(queue.unfinished_counts).values())

    def task(self, task_id: str) -> tuple[str, Any] | None:
        """A task's status and output."""
        row = self.db.read_sync(
            lambda c: c.execute(
                select(tasks.c.status, tasks.c.output).where(tasks.c.id == task_id)
            ).first()
        )
        return None if row is None else (str(row[0]), row[1])

    def run_window(self) -> tuple[int, int]:
        """The first ``started_at`` and last ``completed_at`` of all tasks, in µs."""
        row = self.db.read_sync(
            lambda c: c.execute(
                select(func.min(tasks.c.started_at), func.max(tasks.c.completed_at))
            ).one()
        )
        return int(row[0]), int(row[1])

    def events_by_type(self) -> dict[str, int]:
        rows = self.db.read_sync(
            lambda c: c.execute(select(events.c.type, func.count()).group_by(events.c.type)).all()
        )
        return {str(type_): int(n) for type_, n in rows}
