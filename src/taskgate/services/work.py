"""The work queue as a worker sees it: each step of the worker loop is one transaction.

A worker records progress and outcomes and claims tasks for its free slots in one
transaction (:meth:`WorkQueue.step`), renews the leases it holds, recovers the
expired leases of any worker, and on shutdown puts back what it still runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taskgate.core.clock import now_us
from taskgate.core.models import Task
from taskgate.store import queue
from taskgate.store.db import Conn, Database
from taskgate.store.queue import Finish, Lease

Progress = tuple[float, str | None, str | None]

__all__ = ["Finish", "Lease", "Progress", "WorkQueue"]


class WorkQueue:
    """One worker's view of the queue (its id, the queues it serves, its lease)."""

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        queues: Sequence[str],
        lease_us: int,
        backoff_us: int,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._db = db
        self.worker_id = worker_id
        self.queues = list(queues)
        self._lease_us = lease_us
        self._backoff_us = backoff_us

    async def step(
        self,
        progress: Sequence[tuple[Lease, Progress]],
        outcomes: Sequence[Finish],
        claim: int,
    ) -> tuple[list[Task], list[Task]]:
        """Store progress, apply outcomes, then claim up to ``claim`` tasks, all in
        one transaction. Returns the tasks finished and the tasks claimed."""
        now = now_us()

        def write(conn: Conn) -> tuple[list[Task], list[Task]]:
            for lease, (percent, stage, message) in progress:
                queue.record_progress(conn, lease, percent, stage, message, now)
            done = queue.finish_many(conn, outcomes, now) if outcomes else []
            claimed = (
                queue.claim(
                    conn,
                    worker_id=self.worker_id,
                    queues=self.queues,
                    limit=claim,
                    now=now,
                    lease_us=self._lease_us,
                )
                if claim
                else []
            )
            return done, claimed

        done, claimed = await self._db.write_nearby(write)
        if progress or done or claimed:
            self._changed()
        return done, claimed

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def retry_at(self, attempt: int) -> int:
        """When a task whose attempt failed retryably may run again."""
        return now_us() + queue.retry_delay_us(self._backoff_us, attempt)

    async def renew(self, leases: Sequence[Lease]) -> dict[str, int | None]:
        """Extend the leases still held: for each task still held, when its
        cancellation was asked for (None if not). The others were lost."""
        return await self._db.write_nearby(
            lambda conn: queue.renew(conn, leases, now_us(), self._lease_us)
        )

    async def recover_expired(self) -> list[Task]:
        """Retry, fail or cancel the tasks of any worker whose lease ran out."""
        changed = await self._db.write_nearby(
            lambda conn: queue.recover_expired(conn, now_us(), self._backoff_us)
        )
        if changed:
            self._changed()
        return changed

    async def release(self, leases: Sequence[Lease]) -> list[Task]:
        """Put running tasks back in the queue without spending their attempt."""
        released = await self._db.write_nearby(lambda conn: queue.release(conn, leases, now_us()))
        if released:
            self._changed()
        return released
