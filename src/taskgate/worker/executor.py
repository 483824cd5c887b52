"""The executor process: runs one handler at a time for a worker slot.

It talks to its slot over a pipe. The slot sends an :class:`Assignment` (as a
tuple of its fields); the executor answers with progress messages and, at the end,
one outcome. A cancel request is a shared flag the handler reads through its
context. When a handler must be stopped regardless (grace expired, timeout), the
slot kills the whole process and starts a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import shutil
import signal
import threading
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskgate import logs
from taskgate.core.money import format_credits, parse_credits
from taskgate.services.media import describe_output
from taskgate.services.storage import BlobNotFound, Storage, open_storage
from taskgate.settings import Settings
from taskgate.worker.procutil import die_with_parent
from taskgate.workflows.registry import Registry
from taskgate.workflows.sdk import Cancelled, Context, Price, WorkflowError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Assignment:
    task_id: str
    attempt: int
    workflow: str
    input: dict[str, Any]
    work_dir: str
    output_dir: str
    #: The task's input files: each FileRef value → its blob's key in the storage.
    inputs: dict[str, str] = field(default_factory=dict)


# Added to the executors' nice value (lower CPU priority than the worker and API).
EXECUTOR_NICENESS = 5
# How long a progress report may wait in the executor before it is sent.
PROGRESS_FLUSH_SECONDS = 0.1


class _PipeChannel:
    """The executor's end of the pipe to its slot.

    Progress is held and sent at most every PROGRESS_FLUSH_SECONDS by a flusher
    thread; the outcome carries whatever is still held, so a short task costs one
    message, not one per progress call. One lock covers taking what is held and
    sending it, so progress never reaches the slot after its outcome.
    """

    def __init__(self, conn: Connection, cancel: MpEvent) -> None:
        self._conn = conn
        self._cancel = cancel
        self._lock = threading.Lock()
        self._held: tuple[Any, ...] | None = None
        self._task: tuple[str, int] = ("", 0)
        threading.Thread(target=self._flush_forever, name="progress", daemon=True).start()

    def begin(self, task_id: str, attempt: int) -> None:
        with self._lock:
            self._task = (task_id, attempt)
            self._held = None

    def progress(self, percent: float, stage: str | None, message: str | None) -> None:
        with self._lock:
            self._held = ("progress", *self._task, percent, stage, message)

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(message)

    def finish(self, task_id: str, attempt: int, report: dict[str, Any]) -> None:
        """Send the outcome, with the progress still held."""
        with self._lock:
            held, self._held = self._held, None
            report["progress"] = list(held[3:]) if held is not None else None
            self._conn.send(("done", task_id, attempt, report))

    def _flush_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(PROGRESS_FLUSH_SECONDS):
            with self._lock:
                held, self._held = self._held, None
                if held is not None:
                    try:
                        self._conn.send(held)
                    except OSError:
                        return


def _file_item(name: str, path: Path, content_type: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    # Media is probed here, in the executor, at its lower CPU priority.
    info = describe_output(path, content_type)
    item: dict[str, Any] = {
        "type": "file",
        "name": name,
        "content_type": info.content_type,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "kind": info.kind,
    }
    for key in ("width", "height", "duration"):
        if (value := getattr(info, key)) is not None:
            item[key] = value
    return item


def _place_files(
    output: list[dict[str, Any]], files: dict[Path, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The output with each output file's path that a result holds replaced by the
    file's entry; the files no result holds follow at the top level."""
    placed: set[Path] = set()

    def place(value: Any) -> Any:
        if isinstance(value, Path):
            if value not in files:
                raise ValueError(f"a result holds the path {value}, which is not an output file")
            if value in placed:
                raise ValueError(f"a result holds the output file {value.name!r} twice")
            placed.add(value)
            return files[value]
        if isinstance(value, dict):
            return {key: place(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [place(item) for item in value]
        return value

    held = [place(item) for item in output]
    return held + [item for path, item in files.items() if path not in placed]


def run_assignment(
    registry: Registry, job: Assignment, channel: _PipeChannel, storage: Storage | None = None
) -> dict[str, Any]:
    """Run one handler and describe its outcome as a plain dict."""
    wf = registry.get(job.workflow)
    if wf is None:
        return {
            "status": "failed",
            "error": {
                "code": "workflow_not_found",
                "message": f"This worker has no workflow {job.workflow!r}.",
                "retryable": True,
            },
        }
    work = Path(job.work_dir)
    if work.exists():
        # Left by an attempt that was stopped (a drain gives its attempt number back).
        shutil.rmtree(work, ignore_errors=True)
    ctx: Context[Any] = Context(
        input=None,
        task_id=job.task_id,
        attempt=job.attempt,
        _work_dir=work,
        _channel=channel,
        log=logging.getLogger(f"taskgate.workflow.{job.workflow}"),
    )
    report: dict[str, Any]
    try:
        ctx.input = wf.input.model_validate(job.input)
        for ref, key in job.inputs.items():
            if storage is None:
                raise RuntimeError("this executor has no storage for input files")
            ctx._input_files[ref] = storage.local_path(key, work / "inputs")
        result = wf.handler(ctx)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        if channel.is_cancelled():
            report = {"status": "cancelled"}
        else:
            output: list[dict[str, Any]] = []
            if isinstance(result, dict):
                output.append(result)
            elif isinstance(result, list):
                output.extend(result)
            elif result is not None:
                kind = type(result).__name__
                raise TypeError(f"a handler returns a dict, a list of dicts or None, not {kind}")
            # Priced before the outputs are kept: a price function that fails
            # fails the run.
            price = wf.price_for(ctx.input, ctx._usage)
            destination = Path(job.output_dir)
            files: dict[Path, dict[str, Any]] = {}
            for item in ctx._files:
                if not item.path.exists():
                    raise FileNotFoundError(f"output file {item.name!r} was not written")
                described = _file_item(item.name, item.path, item.content_type)
                destination.mkdir(parents=True, exist_ok=True)
                os.replace(item.path, destination / item.name)
                described["path"] = str(destination / item.name)
                files[item.path] = described
            output = _place_files(output, files)
            report = {
                "status": "completed",
                "output": output,
                "usage": usage_record(ctx._usage, price),
                "charge": parse_credits(price.total),
            }
    except Cancelled:
        report = {"status": "cancelled"}
    except BlobNotFound:
        report = {
            "status": "failed",
            "error": {
                "code": "input_missing",
                "message": "An input file of this task is gone.",
                "retryable": False,
            },
        }
    except WorkflowError as exc:
        report = {
            "status": "failed",
            "error": {"code": exc.code, "message": exc.message, "retryable": exc.retryable},
        }
    except ValidationError as exc:
        report = {
            "status": "failed",
            "error": {"code": "invalid_input", "message": str(exc), "retryable": False},
        }
    except Exception as exc:
        log.error(
            "handler of %s raised\n%s",
            job.workflow,
            traceback.format_exc(),
            extra={"task_id": job.task_id, "attempt": job.attempt},
        )
        report = {
            "status": "failed",
            "error": {
                "code": "handler_error",
                "message": f"{type(exc).__name__}: {exc}",
                "retryable": False,
            },
        }
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    report.setdefault("usage", usage_record(ctx._usage, None))
    report["warnings"] = list(ctx._warnings) or None
    return report


def usage_record(meters: dict[str, float], price: Price | None) -> dict[str, Any]:
    """A task's ``usage``: its meters, and what they cost (nothing unless completed)."""
    record: dict[str, Any] = dict(meters)
    lines = price.lines if price is not None else ()
    record["lines"] = [
        {
            "meter": line.meter,
            "quantity": line.quantity,
            "unit": line.unit,
            "credits": format_credits(parse_credits(line.credits)),
        }
        for line in lines
    ]
    record["credits"] = format_credits(parse_credits(price.total) if price is not None else 0)
    return record


async def _await(awaitable: Any) -> Any:
    return await awaitable


def main(
    conn: Connection,
    cancel: MpEvent,
    modules: list[str],
    log_level: str,
    log_format: str,
    settings: Settings | None = None,
) -> None:
    """Entry point of an executor process."""
    die_with_parent()
    # Ctrl-C reaches the whole process group; the worker decides when handlers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Handlers yield the CPU to the API and to the loop that feeds the slots: a
    # woken executor does not preempt the process that woke it.
    os.nice(EXECUTOR_NICENESS)
    logs.configure(log_level, log_format)
    registry = Registry.load(modules)
    storage = open_storage(settings) if settings is not None else None
    channel = _PipeChannel(conn, cancel)
    channel.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        job = Assignment(*job)
        channel.begin(job.task_id, job.attempt)
        report = run_assignment(registry, job, channel, storage)
        try:
            channel.finish(job.task_id, job.attempt, report)
        except (BrokenPipeError, ConnectionResetError):
            # The worker is gone (killed): nobody is left to tell, and its lease
            # on the task runs out. Exit as the kernel would have made us.
            return
