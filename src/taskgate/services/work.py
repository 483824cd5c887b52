"""The work queue as a worker sees it: each step of the worker loop is one transaction.

A worker records progress and outcomes and claims tasks for its free slots in one
transaction (:meth:`WorkQueue.step`), renews the leases it holds, and on shutdown
puts back what it still runs. (The expired leases of any worker are recovered by
the maintenance leader: :mod:`taskgate.services.maintenance`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from taskgate.core.clock import iso, now_us
from taskgate.core.models import StoredFile, Task
from taskgate.core.states import TaskStatus
from taskgate.payloads import output_files
from taskgate.store import files, queue
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
        output_retention_us: int = 7 * 86_400 * 1_000_000,
        file_workflows: Iterable[str] = (),
    ) -> None:
        self._on_change = on_change
        self._output_retention_us = output_retention_us
        # Workflows with file inputs: only their claimed tasks look up input files.
        self._file_workflows = frozenset(file_workflows)
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
        outputs: Mapping[str, Sequence[StoredFile]] | None = None,
    ) -> tuple[list[Task], list[Task], dict[str, dict[str, str]]]:
        """Store progress, apply outcomes, then claim up to ``claim`` tasks, all in
        one transaction. Returns the tasks finished, the tasks claimed, and the input
        files of the claimed tasks (``{task id: {ref: file id}}``).

        ``outputs``: by task id, the output files (already in the storage) of
        completed outcomes; they are recorded, with their expiry, if the outcome is.
        """
        now = now_us()
        kept: list[StoredFile] = []

        def write(conn: Conn) -> tuple[list[Task], list[Task], dict[str, dict[str, str]]]:
            kept.clear()
            if not progress and not outcomes:
                queue.commit_unflushed(conn)
            for lease, (percent, stage, message) in progress:
                queue.record_progress(conn, lease, percent, stage, message, now)
            if outputs:
                self._date_outputs(conn, outcomes, outputs, now)
            done = queue.finish_many(conn, outcomes, now) if outcomes else []
            if outputs:
                for task in done:
                    if task.status is TaskStatus.COMPLETED and task.id in outputs:
                        kept.extend(outputs[task.id])
                files.insert_files(conn, kept)
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
            wanted = [task.id for task in claimed if task.workflow in self._file_workflows]
            return done, claimed, files.inputs_of(conn, wanted)

        done, claimed, inputs = await self._db.write_nearby(write)
        if progress or done or claimed:
            self._changed()
        return done, claimed, inputs

    def _date_outputs(
        self,
        conn: Conn,
        outcomes: Sequence[Finish],
        outputs: Mapping[str, Sequence[StoredFile]],
        now: int,
    ) -> None:
        """Set the expiry of each output file (the account's output retention from
        now) on its record and on its entry in the outcome's output."""
        for outcome in outcomes:
            records = outputs.get(outcome.lease.task_id)
            if not records:
                continue
            account_id = records[0].account_id
            retention = files.output_retention(conn, account_id)
            expires_at = now + (
                retention * 1_000_000 if retention is not None else self._output_retention_us
            )
            by_id = {}
            for record in records:
                record.expires_at = expires_at
                by_id[record.id] = record
            for item in output_files(outcome.output or []):
                if item["file_id"] in by_id:
                    item["expires_at"] = iso(expires_at)

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

    async def release(self, leases: Sequence[Lease]) -> list[Task]:
        """Put running tasks back in the queue without spending their attempt."""
        released = await self._db.write_nearby(lambda conn: queue.release(conn, leases, now_us()))
        if released:
            self._changed()
        return released
