"""Operational facts: readiness and queue gauges."""

from __future__ import annotations

import logging
import time

from taskgate.core.errors import Unavailable
from taskgate.services.backoff import Backoff
from taskgate.store import migrate
from taskgate.store import queue as queue_repo
from taskgate.store.db import Database

log = logging.getLogger(__name__)


def schema_is_current(db: Database) -> bool:
    """Whether the schema is at the head revision, once the database answers: a
    process started while the database is down waits for it (logging once) rather
    than exit, as the running ones do."""
    backoff = Backoff("start-up: reading the schema revision", log)
    while True:
        try:
            current = migrate.is_up_to_date(db)
        except Unavailable as exc:
            time.sleep(backoff.failed(exc))
            continue
        backoff.succeeded()
        return current


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
