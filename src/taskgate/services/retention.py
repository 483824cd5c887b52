"""Retention: deleting expired files' content, purging old terminal tasks, and
removing scratch files left by a process that died mid-transfer.

Run periodically by the maintenance leader (see :mod:`taskgate.services.maintenance`):
each pass is a few short transactions in batches on the writer thread (the leader
may be an API process, whose event loop must not wait for them), and every step
is idempotent, so a pass cut short by a change of leader is finished by the next.
A blob is deleted before its row is marked expired; a crash in between leaves a
row whose content route answers 410 all the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from taskgate.core.clock import now_us
from taskgate.services.storage import Storage
from taskgate.store import files as files_repo
from taskgate.store import retention as repo
from taskgate.store.db import Conn, Database

log = logging.getLogger(__name__)

BATCH = 500
#: Scratch files (uploads being received, inputs being fetched) older than this were
#: left by a process that died mid-transfer.
SCRATCH_MAX_AGE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Swept:
    files_expired: int = 0
    tasks_purged: int = 0
    scratch_removed: int = 0


class Retention:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        *,
        input_retention_us: int,
        task_retention_us: int,
    ) -> None:
        self._db = db
        self._storage = storage
        self._input_retention_us = input_retention_us
        self._task_retention_us = task_retention_us

    async def sweep(self, now: int | None = None) -> Swept:
        """One pass: expire the files past their retention, then purge the terminal
        tasks past theirs (with their events, deliveries and files)."""
        now = now_us() if now is None else now
        expired = purged = 0
        while (count := await self._expire_batch(now)) > 0:
            expired += count
            if count < BATCH:
                break
        while (count := await self._purge_batch(now - self._task_retention_us)) > 0:
            purged += count
            if count < BATCH:
                break
        scratch = await asyncio.to_thread(self._clean_scratch, now / 1_000_000)
        if expired or purged or scratch:
            log.info(
                "retention: %d files expired, %d tasks purged, %d scratch files removed",
                expired,
                purged,
                scratch,
            )
        return Swept(expired, purged, scratch)

    def _clean_scratch(self, now_seconds: float) -> int:
        removed = 0
        with os.scandir(self._storage.scratch_dir) as entries:
            for entry in entries:
                try:
                    if (
                        entry.is_file(follow_symlinks=False)
                        and now_seconds - entry.stat().st_mtime > SCRATCH_MAX_AGE_SECONDS
                    ):
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    async def _expire_batch(self, now: int) -> int:
        due = await self._db.write(
            lambda conn: files_repo.due_for_expiry(conn, now, self._input_retention_us, BATCH)
        )
        for record in due:
            await asyncio.to_thread(self._storage.delete, record.key)
        ids = [record.id for record in due]
        await self._db.write(lambda conn: files_repo.mark_expired(conn, ids, now))
        return len(ids)

    async def _purge_batch(self, before: int) -> int:
        def purge(conn: Conn) -> tuple[int, list[str]]:
            ids = repo.terminal_before(conn, before, BATCH)
            return len(ids), repo.purge_tasks(conn, ids)

        count, keys = await self._db.write(purge)
        for key in keys:
            await asyncio.to_thread(self._storage.delete, key)
        return count
