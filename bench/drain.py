"""The drain: tasks queued beforehand with no worker, then ``taskgate worker`` started;
how fast the queue empties, and how many event rows that writes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Literal

from pgserver import BENCH_SECRET_KEY
from probe import Probe
from procs import running, taskgate_env, wait_for
from taskgate.composition import Services, build
from taskgate.payloads import WorkflowSubmit
from taskgate.settings import Settings

EnqueueMode = Literal["bulk", "submit"]
SUBMIT = WorkflowSubmit(input={"seconds": 0})
BATCH = 1000


@dataclass(frozen=True, slots=True)
class Enqueued:
    tasks: int
    seconds: float
    mode: EnqueueMode

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class DrainResult:
    tasks: int
    #: Worker slots per ``taskgate worker`` process, and how many processes.
    slots: int
    processes: int
    #: From the first task's started_at to the last one's completed_at.
    seconds: float
    #: From starting ``taskgate worker`` until the bench saw every task completed.
    wall_seconds: float
    events_written: int
    events_by_type: dict[str, int]

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "rate": round(self.rate, 1),
            "events_per_task": round(self.events_written / self.tasks, 2),
        }


def bench_settings(
    data_dir: Path, database_url: str | None = None, *, workflows: list[str] | None = None
) -> Settings:
    """The settings of the bench process's own services: the data dir's SQLite
    database, or ``database_url`` with the bench's secret key."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        secret_key=BENCH_SECRET_KEY if database_url else None,
        workflows=workflows or [],
    )


def enqueue(
    data_dir: Path,
    account: str,
    count: int,
    mode: EnqueueMode,
    *,
    database_url: str | None = None,
) -> Enqueued:
    """Queue ``count`` ``wait`` tasks (0 s) through the task service, no worker running.

    ``submit`` calls ``TaskService.submit`` for every task (one commit and one
    queue-position read each). ``bulk`` calls ``TaskService.submit_many``, ``BATCH``
    tasks per transaction: the same rows and ``task.created`` events.
    """
    services = build(bench_settings(data_dir, database_url))
    try:
        account_id = services.accounts.find_account(account).id
        start = time.perf_counter()
        if mode == "submit":
            asyncio.run(_submit_all(services, account_id, count))
        else:
            asyncio.run(_submit_batches(services, account_id, count))
        return Enqueued(count, time.perf_counter() - start, mode)
    finally:
        services.close()


async def _submit_all(services: Services, account_id: str, count: int) -> None:
    for _ in range(count):
        await services.tasks.submit(account_id, "wait", SUBMIT, None)


async def _submit_batches(services: Services, account_id: str, count: int) -> None:
    left = count
    while left > 0:
        n = min(BATCH, left)
        await services.tasks.submit_many(account_id, "wait", [SUBMIT] * n)
        left -= n


def drain(
    data_dir: Path,
    *,
    count: int,
    slots: int,
    timeout: float,
    log_dir: Path,
    processes: int = 1,
    database_url: str | None = None,
) -> DrainResult:
    """Start ``processes`` × ``taskgate worker --workers SLOTS`` and wait for all
    ``count`` tasks."""
    with Probe(data_dir, database_url) as probe:
        queued = probe.task_count("queued")
        if queued != count:
            raise RuntimeError(f"expected {count} queued tasks, found {queued}")
        events_before = probe.event_count()
        types_before = probe.events_by_type()
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            workers = [
                stack.enter_context(
                    running(
                        [sys.executable, "-m", "taskgate", "worker", "--workers", str(slots)],
                        env=taskgate_env(data_dir, database_url=database_url),
                        log_path=log_dir / f"worker{'' if i == 0 else f'-{i + 1}'}.log",
                    )
                )
                for i in range(processes)
            ]
            # Counting what is left reads the small partial indexes of queued and
            # running tasks; counting completed ones would scan the whole table
            # ten times a second, taking CPU from the worker being measured.
            wait_for(
                lambda: _alive(workers) and probe.unfinished() == 0,
                timeout=timeout,
                interval=0.1,
                what=f"{count} tasks to complete",
            )
            wall = time.monotonic() - started
        first_start, last_completion = probe.run_window()
        types_after = probe.events_by_type()
        failed = probe.task_count() - probe.task_count("completed")
        if failed:
            raise RuntimeError(f"{failed} tasks did not complete")
        return DrainResult(
            tasks=count,
            slots=slots,
            processes=processes,
            seconds=(last_completion - first_start) / 1e6,
            wall_seconds=wall,
            events_written=probe.event_count() - events_before,
            events_by_type={
                type_: n - types_before.get(type_, 0)
                for type_, n in sorted(types_after.items())
                if n - types_before.get(type_, 0)
            },
        )


def _alive(processes: list[Popen[bytes]]) -> bool:
    for process in processes:
        if process.poll() is not None:
            raise RuntimeError(f"a worker exited (code {process.returncode})")
    return True
