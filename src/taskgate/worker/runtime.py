"""The worker runtime: one asyncio loop driving N slots, each with an executor process.

The loop is the only writer of the worker's state. Everything that happens — a
wake-up, a handler's progress or outcome, a timer — marks work to do and kicks the
scheduler, which applies it all in one transaction and claims work for the free
slots in the same transaction:

    finished outcomes + due progress + claims  →  one write  →  assignments

Leases are renewed in bulk; a lease this worker lost (the maintenance leader
recovered the task) stops the local run. The process also campaigns for the
deployment's maintenance lease (:mod:`taskgate.services.maintenance`): whichever
process holds it recovers the expired leases of every worker and sweeps retention.
While the database is unavailable the loops back off and keep what they have to
write (outcomes, their stored outputs) for when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.context import (
    ForkServerContext,
    ForkServerProcess,
    SpawnContext,
    SpawnProcess,
)
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from taskgate.core.aio import wait_set
from taskgate.core.clock import now_us, to_us
from taskgate.core.ids import new_id
from taskgate.core.models import StoredFile, Task
from taskgate.core.states import TaskStatus
from taskgate.metrics import TASK_DURATION, TASKS_FINISHED
from taskgate.payloads import map_output_files, output_files
from taskgate.services.backoff import Backoff
from taskgate.services.channel import API, WORKER, Subscription, open_channel
from taskgate.services.files import keep_output, output_entry
from taskgate.services.maintenance import maintenance_for
from taskgate.services.storage import open_storage
from taskgate.services.work import Finish, Lease, WorkQueue
from taskgate.settings import Settings
from taskgate.store.db import Database
from taskgate.worker import executor
from taskgate.workflows.registry import Registry
from taskgate.workflows.sdk import takes_files

log = logging.getLogger(__name__)

# Progress is stored at most this often per task; the last update is always stored.
PROGRESS_INTERVAL = 0.5
#: The first retry of a claim that left slots idle (doubling up to the poll interval).
CLAIM_AGAIN_SECONDS = 0.005
#: How long an outcome waits for those of the other running slots, so that one
#: step records them together: on PostgreSQL a step's transaction (round trips,
#: and its claim) costs about as much for one outcome as for eight. On SQLite a
#: step is cheap and the wait only idles slots, so outcomes are not held there.
GATHER_SECONDS = 0.002


#: Imported once by the fork server, so that an executor forked from it starts
#: ready: taskgate's own modules (the built-in workflows bring numpy and PyAV), and
#: its command line, which multiprocessing runs again in every child when the
#: program is the ``taskgate`` script (a quarter of a second of CPU each).
#: A team's workflow modules are imported in each executor instead, never in the
#: server: one that sets up a GPU or threads at import must not be forked.
EXECUTOR_PRELOAD = ["taskgate.worker.executor", "taskgate.workflows.builtin", "taskgate.cli.main"]


def _executor_context() -> ForkServerContext | SpawnContext:
    """Executors start from a fork server where the platform has one: importing
    the workflows costs about a second of CPU, paid once there rather than by
    every executor (16 slots started at once spent 8 of a 2-core machine's
    seconds on it). Elsewhere they are spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(EXECUTOR_PRELOAD)
    return context


def _context(lease: Lease) -> dict[str, object]:
    return {"task_id": lease.task_id, "attempt": lease.attempt}


@dataclass
class Running:
    lease: Lease
    task: Task
    started: float = field(default_factory=time.monotonic)
    cancel_requested: bool = False
    # The latest progress not yet stored, and when storing the next is allowed.
    pending_progress: tuple[float, str | None, str | None] | None = None
    progress_due: float = 0.0
    progress_timer: bool = False
    finished: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class Slot:
    """One executor process and the task it runs."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: SpawnProcess | ForkServerProcess | None = None
        self.conn: Connection | None = None
        self.cancel: MpEvent | None = None
        self.ready = False
        self.running: Running | None = None
        # Whether the cancel flag was raised since the executor last started a task
        # (kept here: reading the shared flag takes a lock across processes).
        self.cancel_set = False

    @property
    def idle(self) -> bool:
        return self.ready and self.running is None


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        *,
        slots: int,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id or new_id("wrk")
        self.queues = registry.queues()
        # Wake-ups: new tasks and cancellations in, written events out.
        self._channel = open_channel(settings)
        self.work = WorkQueue(
            db,
            worker_id=self.worker_id,
            queues=self.queues,
            lease_us=to_us(settings.lease_seconds),
            backoff_us=to_us(settings.retry_backoff_seconds),
            # Event streams in the API processes read the outbox when woken.
            on_change=partial(self._channel.publish, API, b"e"),
            output_retention_us=to_us(settings.output_retention.total_seconds()),
            file_workflows=[wf.name for wf in registry if takes_files(wf.input)],
        )
        self._storage = open_storage(settings)
        self.maintenance = maintenance_for(
            settings, db, self._storage, on_recovered=self._on_recovered
        )
        # The account of each task this worker runs (its outputs are the account's).
        self._accounts: dict[str, str] = {}
        self.slots = [Slot(i) for i in range(slots)]
        self._mp = _executor_context()
        self._kick = asyncio.Event()
        self._stopping = asyncio.Event()
        self._draining = False
        # When to claim again although nothing woke the loop (None: at the poll).
        self._claim_again: float | None = None
        self._finished: list[Finish] = []
        self._gather_seconds = 0.0 if db.is_sqlite else GATHER_SECONDS
        # Outputs stored for outcomes not yet recorded (a step failed): kept for the
        # step that records them.
        self._kept_outputs: dict[str, list[StoredFile]] = {}
        # Running tasks whose pending progress may be stored at the next tick.
        self._progress_due: dict[Lease, Running] = {}
        self._cancel_notices: set[str] = set()
        self._durations: dict[tuple[str, str], Any] = {}
        self._work_root = str(settings.work_dir.resolve())
        self._output_root = str((settings.blob_dir / "outputs").resolve())
        self._listener: Subscription | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Begin a drain: stop claiming, let running tasks finish, then exit."""
        self._stopping.set()
        self._kick.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = self._channel.listen(
            WORKER, self.worker_id.removeprefix("wrk_"), self._on_datagram
        )
        for slot in self.slots:
            self._spawn(slot)
        log.info(
            "worker %s started: %d slots, queues %s", self.worker_id, len(self.slots), self.queues
        )
        renewals = asyncio.create_task(self._renew_forever())
        maintenance = asyncio.create_task(self.maintenance.run())
        try:
            await self._schedule_until_stopped()
            await self._drain()
        finally:
            for job in (renewals, maintenance):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            for slot in self.slots:
                self._kill(slot)
            self._listener.close()
            self._channel.close()
            log.info("worker %s stopped", self.worker_id)

    async def _schedule_until_stopped(self) -> None:
        poll = self.settings.poll_interval_seconds
        backoff = Backoff(f"worker {self.worker_id}: scheduling", log)
        while not self._stopping.is_set():
            if not self._kick.is_set():
                await wait_set(self._kick, min(poll, self._claim_again or poll))
            else:
                # Work is waiting: let the loop read pipes and datagrams first.
                await asyncio.sleep(0)
            self._kick.clear()
            if self._finished and self._gather_seconds:
                await self._gather_outcomes()
            try:
                await self._tick(claim=True)
                backoff.succeeded()
            except Exception as exc:
                # Wait (a stop ends the wait): what the step had to write is kept.
                await wait_set(self._stopping, backoff.failed(exc))
                self._kick.set()

    async def _gather_outcomes(self) -> None:
        """Wait up to GATHER_SECONDS for the slots still running to report."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._gather_seconds
        while any(slot.running for slot in self.slots) and not self._stopping.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return
            self._kick.clear()
            await wait_set(self._kick, left)
        self._kick.clear()

    async def _drain(self) -> None:
        self._draining = True
        deadline = time.monotonic() + self.settings.drain_seconds
        log.info("worker %s draining for up to %.1fs", self.worker_id, self.settings.drain_seconds)
        backoff = Backoff(f"worker {self.worker_id}: draining", log)
        while any(slot.running for slot in self.slots) and time.monotonic() < deadline:
            self._kick.clear()
            await wait_set(self._kick, deadline - time.monotonic())
            try:
                await self._tick(claim=False)
                backoff.succeeded()
            except Exception as exc:
                left = max(0.0, deadline - time.monotonic())
                await asyncio.sleep(min(backoff.failed(exc), left))
                self._kick.set()
        leftover = [slot for slot in self.slots if slot.running]
        leases = []
        for slot in leftover:
            assert slot.running is not None
            leases.append(slot.running.lease)
            self._stop_running(slot)
            self._kill(slot)
        try:
            await self._tick(claim=False)
            released = await self.work.release(leases) if leases else []
        except Exception:
            # The database is away: the tasks still held go back to the queue when
            # their leases run out (outcomes not recorded are run again).
            log.warning(
                "worker %s could not record its last outcomes; the tasks are retried "
                "when their leases run out",
                self.worker_id,
                exc_info=True,
            )
            return
        if released:
            log.info(
                "worker %s put %d running tasks back in the queue", self.worker_id, len(released)
            )

    # -- executors ---------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        parent, child = self._mp.Pipe(duplex=True)
        cancel = self._mp.Event()
        process = self._mp.Process(
            target=executor.main,
            args=(
                child,
                cancel,
                list(self.settings.workflows),
                self.settings.log_level,
                self.settings.log_format,
                self.settings,
            ),
            name=f"taskgate-executor-{slot.index}",
            daemon=True,
        )
        process.start()
        child.close()
        slot.process, slot.conn, slot.cancel, slot.ready = process, parent, cancel, False
        slot.cancel_set = False
        assert self._loop is not None
        self._loop.add_reader(parent.fileno(), self._on_readable, slot, parent)

    def _kill(self, slot: Slot) -> None:
        if slot.conn is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(slot.conn.fileno())
            slot.conn.close()
        if slot.process is not None and slot.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid or 0, signal.SIGKILL)
            slot.process.join(timeout=5)
        slot.process, slot.conn, slot.ready = None, None, False

    def _replace(self, slot: Slot) -> None:
        self._kill(slot)
        if not self._draining and not self._stopping.is_set():
            self._spawn(slot)

    def _on_readable(self, slot: Slot, conn: Connection) -> None:
        while True:
            try:
                if not conn.poll():
                    return
                message = conn.recv()
            except (EOFError, OSError):
                self._on_executor_died(slot, conn)
                return
            self._on_message(slot, message)

    def _on_executor_died(self, slot: Slot, conn: Connection) -> None:
        if slot.conn is not conn:
            return
        running = slot.running
        log.warning("worker %s: executor of slot %d exited", self.worker_id, slot.index)
        if running is not None:
            self._stop_running(slot)
            error = {
                "code": "worker_lost",
                "message": "The process running this task exited.",
                "retryable": True,
            }
            self._finished.append(self._failure(running, error))
        self._replace(slot)
        self._kick.set()

    def _on_message(self, slot: Slot, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            slot.ready = True
            self._kick.set()
            return
        running = slot.running
        if running is None or (message[1], message[2]) != (
            running.lease.task_id,
            running.lease.attempt,
        ):
            return  # from an attempt this slot already gave up
        if kind == "progress":
            self._on_progress(running, (message[3], message[4], message[5]))
        elif kind == "done":
            self._stop_running(slot)
            self._finished.append(self._outcome(running, message[3]))
            self._kick.set()

    def _on_progress(
        self, running: Running, progress: tuple[float, str | None, str | None]
    ) -> None:
        # Stored at the next tick, at most every PROGRESS_INTERVAL per task; an
        # outcome that arrives first carries the latest progress instead.
        running.pending_progress = progress
        now = time.monotonic()
        if now >= running.progress_due:
            self._progress_due[running.lease] = running
            self._kick.set()
        elif not running.progress_timer:
            assert self._loop is not None
            running.progress_timer = True
            running.timers.append(
                self._loop.call_later(running.progress_due - now, self._progress_timer, running)
            )

    def _progress_timer(self, running: Running) -> None:
        running.progress_timer = False
        if running.pending_progress is not None:
            self._progress_due[running.lease] = running
            self._kick.set()

    # -- outcomes ----------------------------------------------------------------

    def _outcome(self, running: Running, report: dict[str, Any]) -> Finish:
        status = report["status"]
        latest = report.get("progress")
        common: dict[str, Any] = {
            "usage": report.get("usage"),
            "warnings": report.get("warnings"),
            "progress": tuple(latest) if latest else running.pending_progress,
        }
        if status == "completed":
            return Finish(
                running.lease,
                TaskStatus.COMPLETED,
                output=report["output"],
                charge=report["charge"],
                **common,
            )
        if status == "cancelled" or running.cancel_requested:
            return Finish(running.lease, TaskStatus.CANCELLED, **common)
        finish = self._failure(running, report["error"])
        finish.usage, finish.warnings, finish.progress = (
            common["usage"],
            common["warnings"],
            common["progress"],
        )
        return finish

    def _failure(self, running: Running, error: dict[str, Any]) -> Finish:
        task = running.task
        if error.get("retryable") and running.lease.attempt < task.max_attempts:
            retry_at = self.work.retry_at(running.lease.attempt)
            return Finish(running.lease, TaskStatus.QUEUED, error=error, retry_at=retry_at)
        return Finish(running.lease, TaskStatus.FAILED, error=error)

    def _stop_running(self, slot: Slot) -> None:
        running = slot.running
        if running is None:
            return
        for timer in running.timers:
            timer.cancel()
        running.finished = True
        slot.running = None

    # -- scheduling --------------------------------------------------------------

    async def _tick(self, *, claim: bool) -> None:
        finished, self._finished = self._finished, []
        progress = []
        for running in self._progress_due.values():
            if running.pending_progress is not None and not running.finished:
                progress.append((running.lease, running.pending_progress))
                running.pending_progress = None
                running.progress_due = time.monotonic() + PROGRESS_INTERVAL
        self._progress_due.clear()
        free = [slot for slot in self.slots if slot.idle] if claim and not self._draining else []
        if not finished and not progress and not free:
            return
        outputs = await self._keep_outputs(finished) if finished else None
        if self._kept_outputs:
            outputs = {**self._kept_outputs, **(outputs or {})}
            self._kept_outputs = {}
        try:
            done, claimed, inputs = await self.work.step(progress, finished, len(free), outputs)
        except Exception:
            # Keep the outcomes, and the outputs already stored for them: they are
            # recorded by the next tick.
            self._finished[:0] = finished
            self._kept_outputs = outputs or {}
            # (progress is dropped: newer progress or the outcome supersedes it)
            raise
        for task in done:
            log.info(
                "task %s %s",
                task.workflow,
                task.status,
                extra={"task_id": task.id, "attempt": task.attempts},
            )
            if task.started_at is not None:
                self._duration(task.workflow, task.status.value).observe(
                    max(0.0, (task.updated_at - task.started_at) / 1e6)
                )
        for (workflow, status), count in Counter(
            (t.workflow, t.status.value) for t in done
        ).items():
            TASKS_FINISHED.labels(workflow, status).inc(count)
        if outputs:
            await self._drop_unkept_outputs(outputs, done)
        for slot, task in zip(free, claimed, strict=False):
            self._assign(slot, task, inputs.get(task.id, {}))
        if free:
            self._schedule_claim_again(len(claimed) < len(free), bool(claimed or finished))

    def _schedule_claim_again(self, short: bool, busy: bool) -> None:
        """After a claim that left slots idle, claim again soon, then less and less
        often, until the poll interval takes over. A short claim may mean an empty
        queue, or (PostgreSQL) accounts whose rows another worker's transaction
        held: claims skip those rather than wait, and nothing wakes this worker
        when that transaction commits."""
        if not short:
            self._claim_again = None
        elif busy:
            self._claim_again = CLAIM_AGAIN_SECONDS
        elif self._claim_again is not None:
            self._claim_again *= 2
            if self._claim_again >= self.settings.poll_interval_seconds:
                self._claim_again = None

    def _duration(self, workflow: str, status: str) -> Any:
        """The duration histogram of one workflow and status (looked up once)."""
        key = (workflow, status)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = TASK_DURATION.labels(workflow, status)
        return child

    async def _keep_outputs(self, finished: list[Finish]) -> dict[str, list[StoredFile]] | None:
        """Move the output files of completed outcomes into the storage and list them
        in the outcome's output as files; an outcome whose files cannot be stored
        becomes a retryable failure."""
        kept: dict[str, list[StoredFile]] = {}
        for index, finish in enumerate(finished):
            if finish.status is not TaskStatus.COMPLETED or not finish.output:
                continue
            if not output_files(finish.output, key="path"):
                continue
            task_id = finish.lease.task_id
            account_id = self._accounts.get(task_id, "")
            try:
                records, output = await asyncio.to_thread(
                    self._store_outputs, account_id, task_id, finish.output
                )
            except Exception:
                log.exception("could not store the outputs", extra={"task_id": task_id})
                error = {
                    "code": "storage_error",
                    "message": "The task's output files could not be stored.",
                    "retryable": True,
                }
                finished[index] = Finish(finish.lease, TaskStatus.FAILED, error=error)
                continue
            finish.output = output
            kept[task_id] = records
        return kept or None

    def _store_outputs(
        self, account_id: str, task_id: str, output: list[dict[str, Any]]
    ) -> tuple[list[StoredFile], list[dict[str, Any]]]:
        records: list[StoredFile] = []

        def keep(item: dict[str, Any]) -> dict[str, Any]:
            record = keep_output(self._storage, account_id, task_id, dict(item))
            records.append(record)
            return output_entry(record)

        try:
            entries = map_output_files(output, keep, key="path")
        except Exception:
            for record in records:
                self._storage.delete(record.key)
            raise
        return records, entries

    async def _drop_unkept_outputs(
        self, outputs: dict[str, list[StoredFile]], done: list[Task]
    ) -> None:
        """Delete the stored outputs of outcomes that were not recorded as completed
        (the lease was lost, or a cancel request won)."""
        completed = {task.id for task in done if task.status is TaskStatus.COMPLETED}
        for task_id, records in outputs.items():
            if task_id not in completed:
                for record in records:
                    await asyncio.to_thread(self._storage.delete, record.key)

    def _assign(self, slot: Slot, task: Task, inputs: dict[str, str] | None = None) -> None:
        assert slot.conn is not None and slot.cancel is not None and self._loop is not None
        lease = Lease(task.id, self.worker_id, task.attempts)
        running = Running(lease=lease, task=task)
        slot.running = running
        if len(self._accounts) > 10_000:
            self._accounts.clear()
        self._accounts[task.id] = task.account_id
        if slot.cancel_set:
            slot.cancel.clear()
            slot.cancel_set = False
        where = f"{task.id}/{task.attempts}"
        # A plain tuple (an Assignment's fields): it pickles faster than the class.
        slot.conn.send(
            (
                task.id,
                task.attempts,
                task.workflow,
                task.input,
                f"{self._work_root}/{where}",
                f"{self._output_root}/{where}",
                {ref: f"files/{file_id}" for ref, file_id in (inputs or {}).items()},
            )
        )
        running.timers.append(
            self._loop.call_later(task.timeout_seconds, self._on_timeout, slot, running)
        )
        log.info(
            "task %s started", task.workflow, extra={"task_id": task.id, "attempt": task.attempts}
        )
        if task.cancel_requested_at is not None or task.id in self._cancel_notices:
            self._request_cancel(slot, running, task.cancel_requested_at)

    def _on_timeout(self, slot: Slot, running: Running) -> None:
        if slot.running is not running:
            return
        log.warning("task timed out", extra=_context(running.lease))
        self._stop_running(slot)
        self._replace(slot)
        error = {
            "code": "timeout",
            "message": f"The task ran past its timeout of {running.task.timeout_seconds:g}s.",
            "retryable": False,
        }
        if running.cancel_requested:
            self._finished.append(Finish(running.lease, TaskStatus.CANCELLED))
        else:
            self._finished.append(Finish(running.lease, TaskStatus.FAILED, error=error))
        self._kick.set()

    # -- cancellation ------------------------------------------------------------

    def _on_datagram(self, data: bytes) -> None:
        if data.startswith(b"c"):
            self._cancel_notice(data[1:].decode(errors="replace"))
        else:
            self._kick.set()

    def _cancel_notice(self, task_id: str) -> None:
        for slot in self.slots:
            if slot.running is not None and slot.running.lease.task_id == task_id:
                self._request_cancel(slot, slot.running, None)
                return
        # The claim of this task may be in flight: remember the notice until then
        # (lease renewal finds the request in the database anyway).
        if len(self._cancel_notices) > 1000:
            self._cancel_notices.clear()
        self._cancel_notices.add(task_id)

    def _request_cancel(self, slot: Slot, running: Running, requested_at: int | None) -> None:
        if running.cancel_requested:
            return
        assert slot.cancel is not None and self._loop is not None
        running.cancel_requested = True
        slot.cancel.set()
        slot.cancel_set = True
        elapsed = 0.0 if requested_at is None else max(0.0, (now_us() - requested_at) / 1e6)
        grace = max(0.0, self.settings.cancel_grace_seconds - elapsed)
        running.timers.append(self._loop.call_later(grace, self._on_grace_over, slot, running))
        log.info("cancel requested", extra=_context(running.lease))

    def _on_grace_over(self, slot: Slot, running: Running) -> None:
        if slot.running is not running:
            return
        log.warning("handler ignored cancellation; stopping it", extra=_context(running.lease))
        self._stop_running(slot)
        self._replace(slot)
        self._finished.append(
            Finish(running.lease, TaskStatus.CANCELLED, progress=running.pending_progress)
        )
        self._kick.set()

    # -- maintenance -------------------------------------------------------------

    async def _renew_forever(self) -> None:
        """Renew this worker's leases, a few times per lease."""
        interval = self.settings.lease_seconds / 3
        backoff = Backoff(f"worker {self.worker_id}: lease renewal", log, cap=interval)
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self._renew()
                backoff.succeeded()
                delay = interval
            except Exception as exc:
                delay = backoff.failed(exc)

    def _on_recovered(self, recovered: list[Task]) -> None:
        """This process, as the maintenance leader, put tasks back or ended them."""
        self._channel.publish(API, b"e")
        # Tasks put back may run on any worker, not only this one.
        self._channel.publish(WORKER, b"t")
        self._kick.set()

    async def _renew(self) -> None:
        running = {slot.running.lease: slot for slot in self.slots if slot.running is not None}
        if not running:
            return
        leases = list(running)
        held = await self.work.renew(leases)
        for lease, slot in running.items():
            if slot.running is None or slot.running.lease != lease:
                continue
            if lease.task_id not in held:
                log.warning("lease lost; stopping the local run", extra=_context(lease))
                self._stop_running(slot)
                self._replace(slot)
            elif (requested_at := held[lease.task_id]) is not None:
                self._request_cancel(slot, slot.running, requested_at)
