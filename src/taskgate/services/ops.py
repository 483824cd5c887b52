"""Operational facts: readiness and queue gauges."""

from __future__ import annotations

from taskgate.core.errors import Unavailable
from taskgate.store import migrate
from taskgate.store import queue as queue_repo
from taskgate.store.db import Database


class OpsService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ready(self) -> bool:
        """The database answers and its schema is at the head revision."""
        try:
            return await self._db.read(migrate.is_current)
        except Unavailable:
            return False

    async def queue_counts(self) -> dict[str, int]:
        return await self._db.read(queue_repo.unfinished_counts)
