"""The deployment's maintenance, run by one elected process at a time.

Every node process campaigns for the ``maintenance`` lease (worker processes and
API processes alike, so that a deployment of API nodes alone still recovers and
purges); the holder recovers the tasks of workers whose lease ran out and sweeps
retention. The lease lasts ``ttl`` seconds and the holder renews it every third
of that. A process counts itself the leader only until ``ttl`` after it *sent*
its last successful renewal, which is never later than the lease the database
recorded, so an old leader has stopped before a new one can be elected; a
recovery transaction checks the lease in the database as well. A leader that
cannot renew (the database is down, the process stalls) stops at its deadline;
one that stops resigns, so that another takes over at once instead of after the
lease.

What every process keeps doing for itself is not maintenance: a worker renews the
leases of the tasks it runs; each API process delivers webhooks (a delivery is
taken under its own lease, so each attempt is made once whichever process runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from prometheus_client import Counter

from taskgate.core.clock import now_us, to_us
from taskgate.core.errors import Unavailable
from taskgate.core.ids import new_id
from taskgate.core.models import Task
from taskgate.services.backoff import Backoff
from taskgate.services.retention import Retention
from taskgate.services.storage import Storage
from taskgate.settings import Settings
from taskgate.store import leader as repo
from taskgate.store import queue
from taskgate.store.db import Conn, Database

log = logging.getLogger(__name__)

MAINTENANCE = "maintenance"

LEADER_TERMS = Counter(
    "taskgate_leader_terms_total", "Terms of the maintenance lease won by this deployment."
)


def holder_id() -> str:
    """This process, as a lease holder: host, pid and a random part (a restarted
    process with the same pid is another holder)."""
    return f"{socket.gethostname()}/{os.getpid()}/{new_id('ldr').removeprefix('ldr_')}"


class Leadership:
    """One process's campaign for a named lease."""

    def __init__(
        self,
        db: Database,
        name: str,
        *,
        ttl: float,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self.name = name
        self.holder = holder or holder_id()
        self.ttl = ttl
        self._clock = clock
        self._until = 0.0
        self.term: int | None = None

    @property
    def is_leader(self) -> bool:
        return self._clock() < self._until

    @property
    def remaining(self) -> float:
        """Seconds of leadership left (0 when not the leader)."""
        return max(0.0, self._until - self._clock())

    async def campaign(self) -> bool:
        """Take or renew the lease; whether this process leads now."""
        sent = self._clock()
        term = await self._db.write(
            lambda conn: repo.campaign(conn, self.name, self.holder, now_us(), to_us(self.ttl))
        )
        was = self.term if self.is_leader else None
        if term is None:
            self._until = 0.0
            self.term = None
            if was is not None:
                log.warning("lost the %s lease (term %d)", self.name, was)
            return False
        self._until = sent + self.ttl
        self.term = term.term
        if was != term.term:
            LEADER_TERMS.inc()
            log.info("%s leader: %s (term %d)", self.name, self.holder, term.term)
        return True

    def holds(self, conn: Conn) -> bool:
        """Inside a transaction: whether the lease is still this process's."""
        return self.is_leader and repo.holds(conn, self.name, self.holder, now_us())

    def step_down(self) -> None:
        """Stop counting as the leader (the lease is left to run out)."""
        self._until = 0.0

    async def resign(self) -> None:
        """Give the lease up now, so that another process takes over at once."""
        led = self.is_leader
        self._until = 0.0
        self.term = None
        if led:
            await self._db.write(lambda conn: repo.resign(conn, self.name, self.holder, now_us()))


class Maintenance:
    """Lease recovery and retention, while this process holds the maintenance lease."""

    def __init__(
        self,
        db: Database,
        retention: Retention,
        *,
        ttl: float,
        retry_backoff_us: int,
        retention_interval: float,
        on_recovered: Callable[[list[Task]], None] | None = None,
        holder: str | None = None,
    ) -> None:
        self._db = db
        self._retention = retention
        self.leadership = Leadership(db, MAINTENANCE, ttl=ttl, holder=holder)
        self._interval = ttl / 3
        self._retry_backoff_us = retry_backoff_us
        self._retention_interval = retention_interval
        self._on_recovered = on_recovered
        self._sweeper: asyncio.Task[None] | None = None
        self._next_sweep = 0.0

    async def run(self) -> None:
        """Campaign and maintain until cancelled; then resign."""
        backoff = Backoff(f"maintenance ({self.leadership.holder})", log, cap=self._interval)
        try:
            while True:
                delay = self._interval
                try:
                    await self._campaign()
                    if self.leadership.is_leader:
                        await self._recover()
                        self._sweep_when_due()
                    backoff.succeeded()
                except Exception as exc:
                    delay = backoff.failed(exc)
                if not self.leadership.is_leader:
                    await self._stop_sweeping()
                    delay = min(delay, self._interval)
                else:
                    # Wake at the deadline too (a leader whose renewal hangs stops
                    # then), and when the next sweep is due.
                    delay = min(delay, self.leadership.remaining)
                    if self._sweeper is None or self._sweeper.done():
                        delay = min(delay, max(0.01, self._next_sweep - time.monotonic()))
                await asyncio.sleep(delay)
        finally:
            await self._stop_sweeping()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._interval):
                    await self.leadership.resign()

    async def _campaign(self) -> None:
        # Bounded: a leader whose renewal hangs must still notice its deadline.
        # (asyncio.timeout, not wait_for: see taskgate.core.aio.)
        try:
            async with asyncio.timeout(self._interval):
                await self.leadership.campaign()
        except TimeoutError:
            raise Unavailable("The database did not answer in time.") from None

    async def _recover(self) -> None:
        backoff_us = self._retry_backoff_us

        def recover(conn: Conn) -> list[Task]:
            if not self.leadership.holds(conn):
                return []
            return queue.recover_expired(conn, now_us(), backoff_us)

        recovered = await self._db.write(recover)
        for task in recovered:
            log.warning(
                "recovered a task from a lost worker: now %s",
                task.status,
                extra={"task_id": task.id, "attempt": task.attempts},
            )
        if recovered and self._on_recovered is not None:
            self._on_recovered(recovered)

    def _sweep_when_due(self) -> None:
        if self._sweeper is not None and not self._sweeper.done():
            return
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._retention_interval
        self._sweeper = asyncio.create_task(self._sweep(), name="taskgate-retention")

    async def _sweep(self) -> None:
        try:
            await self._retention.sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed")

    async def _stop_sweeping(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and not sweeper.done():
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper


def maintenance_for(
    settings: Settings,
    db: Database,
    storage: Storage,
    *,
    on_recovered: Callable[[list[Task]], None] | None = None,
) -> Maintenance:
    """The maintenance loop of a node process, timed by the settings: the lease
    lasts ``lease_seconds`` (as a task's does)."""
    retention = Retention(
        db,
        storage,
        input_retention_us=to_us(settings.input_retention.total_seconds()),
        task_retention_us=to_us(settings.task_retention.total_seconds()),
    )
    return Maintenance(
        db,
        retention,
        ttl=settings.lease_seconds,
        retry_backoff_us=to_us(settings.retry_backoff_seconds),
        retention_interval=settings.retention_interval_seconds,
        on_recovered=on_recovered,
    )
