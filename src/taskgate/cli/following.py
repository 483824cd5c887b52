"""Following a task from the command line: a progress bar on stderr while it runs,
Ctrl-C handling, and downloading its outputs.

Exit codes (shared by every client command):

====  ==========================================================
0     completed (or the request succeeded)
1     the task failed
2     usage error (bad option or argument)
3     the task was cancelled
4     the wait timed out (the task goes on)
5     the API answered with an error, or could not be reached
130   interrupted, the task left running
====  ==========================================================
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.prompt import Confirm
from rich.text import Text

from taskgate.client import (
    APIConnectionError,
    APIError,
    Client,
    TaskCancelledError,
    TaskFailedError,
    TaskObject,
    WaitTimeoutError,
)
from taskgate.payloads import output_files

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4
EXIT_API = 5
EXIT_INTERRUPTED = 130

# Lines are never wrapped: output read by scripts keeps one record per line.
# Nothing is read as markup: task fields and server messages are printed as they are.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def emit_json(value: BaseModel | list[BaseModel] | dict[str, Any]) -> None:
    """Print an API object (or a list of them) as JSON on stdout, and nothing else."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    elif isinstance(value, list):
        items = ",\n".join(item.model_dump_json(indent=2) for item in value)
        text = f"[\n{items}\n]" if value else "[]"
    else:
        text = json.dumps(value, indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> NoReturn:
    err.print(Text.assemble(("error:", "red"), " ", message))
    raise typer.Exit(code)


def api_failure(exc: APIError | APIConnectionError, base_url: str) -> NoReturn:
    """Exit 5 with the API's error (code, message, field) or the connection's."""
    if isinstance(exc, APIConnectionError):
        fail(f"cannot reach {base_url}: {exc}", EXIT_API)
    where = f" (field {exc.param})" if exc.param else ""
    fail(f"{exc.message} [{exc.code}, HTTP {exc.status}]{where}", EXIT_API)


class ProgressView:
    """A progress bar on stderr: the status or stage, the percent, the queue
    position or the workflow's message, and the time so far."""

    def __init__(self, task: TaskObject) -> None:
        self.task_id = task.id
        self._progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self._bar: TaskID = self._progress.add_task(task.id, total=100, detail="")
        self._seen: tuple[str, str | None, int | None] | None = None
        self.update(task)

    def __enter__(self) -> ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._progress.stop()

    def update(self, task: TaskObject) -> None:
        stage = task.progress.stage if task.status == "running" else None
        label = f"{task.id} {task.status}" + (f" · {stage}" if stage else "")
        if task.status == "queued" and task.queue_position is not None:
            detail = f"queue position {task.queue_position}"
        else:
            detail = task.progress.message or ""
        self._progress.update(
            self._bar, completed=task.progress.percent, description=label, detail=detail
        )
        # Without a terminal the bar is drawn only at the end: log each change of
        # status, stage or queue position as a line instead.
        seen = (task.status, stage, task.queue_position)
        if not err.is_terminal and seen != self._seen:
            extra = f" ({detail})" if detail else ""
            err.print(f"{label} {task.progress.percent:.0f}%{extra}")
        self._seen = seen


def ask_to_cancel(task_id: str) -> bool:
    """Whether the user wants the task cancelled. Only a terminal can answer:
    without one (a script, a pipe) the task is left running."""
    if not sys.stdin.isatty():
        return False
    try:
        return Confirm.ask(f"Cancel task {task_id}?", console=err, default=False)
    except (KeyboardInterrupt, EOFError):
        return False


def download_outputs(client: Client, task: TaskObject, out_dir: Path) -> list[Path]:
    """Save every output that is a file into ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    for item in output_files(task.output):
        file_id = item.get("file_id")
        if isinstance(file_id, str) and not item.get("expired"):
            saved.append(client.files.download(file_id, out_dir))
    return saved


def follow(
    client: Client,
    task: TaskObject,
    *,
    timeout: float | None,
    out_dir: Path | None,
    as_json: bool,
) -> NoReturn:
    """Wait for ``task`` with a progress bar, download its outputs into ``out_dir``
    (None: none), report, and exit with the code of its end."""
    last = task

    def seen(update: TaskObject) -> None:
        nonlocal last
        last = update
        view.update(update)

    try:
        with ProgressView(task) as view:
            done = client.tasks.wait(task.id, timeout=timeout, on_update=seen)
    except KeyboardInterrupt:
        interrupted(client, last, as_json)
    except TaskFailedError as exc:
        _report_end(exc.task, as_json)
        error = exc.error
        fail(f"task {task.id} failed: {error.message} ({error.code})" if error else str(exc), 1)
    except TaskCancelledError as exc:
        _report_end(exc.task, as_json)
        fail(f"task {task.id} was cancelled", EXIT_CANCELLED)
    except WaitTimeoutError as exc:
        if as_json and exc.task is not None:
            emit_json(exc.task)
        fail(f"{exc}; it goes on: wait again with `taskgate tasks wait {task.id}`", EXIT_TIMEOUT)
    except (APIError, APIConnectionError) as exc:
        api_failure(exc, client.base_url)
    saved: list[Path] = []
    if out_dir is not None:
        try:
            saved = download_outputs(client, done, out_dir)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (APIError, APIConnectionError) as exc:
            api_failure(exc, client.base_url)
    if as_json:
        emit_json(done)
        for path in saved:
            err.print(f"saved {path}")
    else:
        err.print(f"{done.id} completed.")
        for path in saved:
            out.print(str(path))
        if not saved:
            out.print(done.id)
    raise typer.Exit(0)


def _report_end(task: TaskObject, as_json: bool) -> None:
    if as_json:
        emit_json(task)


def interrupted(client: Client, task: TaskObject, as_json: bool) -> NoReturn:
    """Ctrl-C while following ``task``: cancel it if the user says so (exit 3),
    else leave it running and say how to resume (exit 130)."""
    err.print()
    if ask_to_cancel(task.id):
        try:
            cancelled = client.tasks.cancel(task.id)
        except (APIError, APIConnectionError) as exc:
            api_failure(exc, client.base_url)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if as_json:
            emit_json(cancelled)
        err.print(f"Cancel requested for {task.id}.")
        raise typer.Exit(EXIT_CANCELLED)
    err.print(f"{task.id} goes on. Wait for it with: taskgate tasks wait {task.id}")
    if as_json:
        emit_json(task)
    else:
        out.print(task.id)
    raise typer.Exit(EXIT_INTERRUPTED)
