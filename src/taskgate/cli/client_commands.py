"""The client commands of ``taskgate``: submit and follow tasks, read the catalogue
and the usage, upload and download files. They talk to a server over HTTP through
the SDK (``taskgate.client``) only, configured by ``--base-url`` / ``--api-key`` or
``TASKGATE_BASE_URL`` / ``TASKGATE_API_KEY``.

``--json`` prints the API object and nothing else on stdout; progress, prompts and
messages go to stderr. Exit codes are listed in :mod:`taskgate.cli.following`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from taskgate.cli.following import (
    EXIT_INTERRUPTED,
    api_failure,
    emit_json,
    err,
    follow,
    out,
)
from taskgate.cli.inputs import (
    list_fields,
    parse_fields,
    parse_files,
    parse_input,
    with_files,
)
from taskgate.client import APIConnectionError, APIError, Client, TaskObject

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar="TASKGATE_BASE_URL",
        help="The server (default http://127.0.0.1:8000).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="TASKGATE_API_KEY", help="Your API key.", show_default=False),
]
Json = Annotated[bool, typer.Option("--json", help="Print only the API object, as JSON.")]
Timeout = Annotated[
    float | None,
    typer.Option(help="Give up waiting after this many seconds (exit 4; the task goes on)."),
]
OutDir = Annotated[
    Path,
    typer.Option("--out", "-o", help="Directory for the outputs.", file_okay=False),
]
NoDownload = Annotated[bool, typer.Option("--no-download", help="Leave the outputs on the server.")]

tasks_app = typer.Typer(help="Read, wait for and cancel tasks.", no_args_is_help=True)
files_app = typer.Typer(help="Upload and download files.", no_args_is_help=True)


@contextmanager
def session(base_url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client of the server; API and connection errors exit 5, Ctrl-C 130."""
    client = Client(base_url, api_key)
    try:
        yield client
    except (APIError, APIConnectionError) as exc:
        api_failure(exc, client.base_url)
    except KeyboardInterrupt:
        err.print("\ninterrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        client.close()


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise typer.BadParameter("must be more than 0 seconds", param_hint="--timeout")


def _describe(task: TaskObject) -> None:
    """A task as lines of ``name  value`` on stdout."""
    rows: list[tuple[str, str]] = [
        ("id", task.id),
        ("workflow", f"{task.workflow} {task.workflow_version}"),
        ("status", task.status),
        ("progress", f"{task.progress.percent:.0f}% {task.progress.stage or ''}".rstrip()),
    ]
    if task.queue_position is not None:
        rows.append(("queue", f"position {task.queue_position}"))
    if task.error is not None:
        rows.append(("error", f"{task.error.code}: {task.error.message}"))
    rows.append(("created", task.created_at))
    if task.completed_at:
        rows.append(("ended", task.completed_at))
    rows.append(("credits", task.billing.charged_credits or task.billing.reserved_credits))
    for item in task.output:
        rows.append(("output", str(item.get("url") or item)))
    for name, value in rows:
        out.print(f"{name:<9} {value}")


def submit(
    workflow: Annotated[
        str, typer.Argument(help="The workflow to run (see `taskgate workflows`).")
    ],
    input_json: Annotated[
        str | None,
        typer.Option("--input", help="The input as a JSON object, or @FILE to read it."),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "-i",
            "--field",
            help="key=value in the input; the value is read as JSON if it parses, else text.",
        ),
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option(
            "--file",
            help="field=PATH: upload PATH and put its id in that field (repeat: a list).",
        ),
    ] = None,
    priority: Annotated[
        int | None, typer.Option(min=-10, max=10, help="-10..10, higher first.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow the task to its end.")] = False,
    timeout: Timeout = None,
    out_dir: OutDir = Path("."),
    no_download: NoDownload = False,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a task to WORKFLOW; with --wait, follow it and download its outputs.

    Without --wait it prints the task's id. With --wait it shows a progress bar, then
    saves the outputs into --out and prints their paths; Ctrl-C while waiting asks
    whether to cancel the task (exit 3), else leaves it running (exit 130).
    """
    _check_timeout(timeout)
    values = parse_input(input_json)
    values.update(parse_fields(field or []))
    uploads = parse_files(file or [])
    with session(base_url, api_key) as client:
        if uploads:
            # Read first: an unknown workflow uploads nothing, and a list field
            # given one file still gets a list.
            schema = client.workflows.get(workflow).input_schema
            values = with_files(
                values, uploads, lambda path: client.files.upload(path).id, list_fields(schema)
            )
        task = client.tasks.create(workflow, values, priority=priority)
        if not wait:
            if as_json:
                emit_json(task)
            else:
                where = f", queue position {task.queue_position}" if task.queue_position else ""
                err.print(f"Submitted {task.id} ({task.status}{where}).")
                out.print(task.id)
            return
        follow(
            client,
            task,
            timeout=timeout,
            out_dir=None if no_download else out_dir,
            as_json=as_json,
        )


@tasks_app.command("get")
def tasks_get(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show a task as it stands."""
    with session(base_url, api_key) as client:
        task = client.tasks.get(task_id)
    if as_json:
        emit_json(task)
    else:
        _describe(task)


@tasks_app.command("list")
def tasks_list(
    status: Annotated[
        list[str] | None,
        typer.Option(help="Only tasks in this status (repeat for several)."),
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Only tasks of this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many tasks.")] = 20,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List your tasks, newest first (--json: an array of task objects)."""
    with session(base_url, api_key) as client:
        found: list[TaskObject] = []
        for task in client.tasks.list(status=status, workflow=workflow, limit=min(limit, 100)):
            found.append(task)
            if len(found) >= limit:
                break
    if as_json:
        emit_json(list(found))
        return
    table = Table("id", "workflow", "status", "progress", "created")
    for task in found:
        table.add_row(
            task.id, task.workflow, task.status, f"{task.progress.percent:.0f}%", task.created_at
        )
    Console(width=200).print(table)


@tasks_app.command("wait")
def tasks_wait(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    timeout: Timeout = None,
    out_dir: OutDir = Path("."),
    no_download: NoDownload = False,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Follow a task to its end with a progress bar and download its outputs.

    Exit 0 completed, 1 failed, 3 cancelled, 4 timed out.
    """
    _check_timeout(timeout)
    with session(base_url, api_key) as client:
        task = client.tasks.get(task_id)
        follow(
            client,
            task,
            timeout=timeout,
            out_dir=None if no_download else out_dir,
            as_json=as_json,
        )


@tasks_app.command("cancel")
def tasks_cancel(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Cancel a task: a queued one at once, a running one at its next check."""
    with session(base_url, api_key) as client:
        task = client.tasks.cancel(task_id)
    if as_json:
        emit_json(task)
    elif task.status == "cancelled":
        out.print(f"{task.id} cancelled.")
    else:
        out.print(f"{task.id}: cancel requested; it stops at its next check.")


def workflows(
    name: Annotated[
        str | None, typer.Argument(help="Show this workflow and its input schema.")
    ] = None,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List the workflows you can submit to, or show one."""
    with session(base_url, api_key) as client:
        if name is not None:
            found = client.workflows.get(name)
            if as_json:
                emit_json(found)
            else:
                out.print(f"{found.name} {found.version}: {found.title}")
                out.print(found.description)
                emit_json(found.input_schema)
            return
        catalogue = client.workflows.list()
    if as_json:
        emit_json(list(catalogue))
        return
    table = Table("name", "title", "estimate (credits)", "expected seconds")
    for flow in catalogue:
        estimate = flow.estimate
        table.add_row(
            flow.name,
            flow.title,
            estimate.credits if estimate else "",
            f"{estimate.seconds:g}" if estimate else "",
        )
    Console(width=200).print(table)


def usage(as_json: Json = False, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Show your credits, tasks in progress and rate limits."""
    with session(base_url, api_key) as client:
        found = client.usage.get()
    if as_json:
        emit_json(found)
        return
    out.print(f"account      {found.account_id}")
    out.print(f"balance      {found.balance}")
    out.print(f"reserved     {found.reserved}")
    out.print(f"charged      {found.charged_period} since {found.period_start}")
    out.print(f"running      {found.running} of {found.concurrency_limit} (queued {found.queued})")
    for limit in found.rate_limits:
        out.print(
            f"{limit.policy:<12} {limit.remaining} of {limit.limit} left, "
            f"per {limit.window_seconds} s"
        )


@files_app.command("upload")
def files_upload(
    path: Annotated[
        Path, typer.Argument(help="The file.", exists=True, dir_okay=False, readable=True)
    ],
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Upload a workflow input and print its id."""
    with session(base_url, api_key) as client:
        found = client.files.upload(path)
    if as_json:
        emit_json(found)
    else:
        err.print(f"Uploaded {path.name}: {found.bytes} bytes, {found.content_type}.")
        out.print(found.id)


@files_app.command("download")
def files_download(
    file_id: Annotated[str, typer.Argument(help="The file's id (file_…).")],
    to: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="A directory (ending in / or existing: the server's file name) or a file.",
        ),
    ] = ".",
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Download a file and print the path written."""
    target = Path(to).expanduser()
    if to.endswith(("/", os.sep)):
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot make {to}: {exc.strerror}", param_hint="--out"
            ) from exc
    elif not target.is_dir() and not target.parent.is_dir():
        raise typer.BadParameter(f"no such directory: {target.parent}", param_hint="--out")
    with session(base_url, api_key) as client:
        saved = client.files.download(file_id, target)
        described = client.files.get(file_id) if as_json else None
    if described is not None:
        emit_json(described)
        err.print(f"saved {saved}")
    else:
        out.print(str(saved))


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``taskgate`` command."""
    app.command()(submit)
    app.add_typer(tasks_app, name="tasks")
    app.command()(workflows)
    app.command()(usage)
    app.add_typer(files_app, name="files")
