"""``/v1/tasks``: submit, read, list, query, cancel, delete."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from taskgate.api.deps import Caller, ReaderDep, WriterDep, read_caller
from taskgate.api.presenters import task_object
from taskgate.api.responses import ERROR_RESPONSES, json_response, task_response
from taskgate.core.clock import now_us, parse_iso
from taskgate.core.errors import InvalidParam
from taskgate.metrics import TASKS_SUBMITTED
from taskgate.payloads import ListObject, TaskObject, TaskQuery, TaskSubmit, WorkflowSubmit

router = APIRouter(
    prefix="/v1",
    tags=["tasks"],
    responses={
        **ERROR_RESPONSES,
        429: {
            "model": None,
            "description": "Over the key's rate limit (`rate_limited`); see `Retry-After`",
        },
    },
)

_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The task an idempotency key already created"},
    402: {
        "model": None,
        "description": "The balance cannot cover the estimate (`insufficient_credits`, "
        "`details: {needed, available}`); nothing was written",
    },
}

PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`wait=N` (N ≤ 60): answer when the task is terminal or after N seconds.",
    ),
]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a retried submission return the original task (same as out_task_id).",
    ),
]


@router.get(
    "/tasks/{task_id}",
    response_model=TaskObject,
    operation_id="get_task",
)
async def get_task(task_id: str, request: Request) -> Response:
    """A task as it stands. ``Retry-After`` suggests when to poll again."""
    return await poll_task(request)


async def poll_task(request: Request) -> Response:
    """``GET /v1/tasks/{task_id}`` as a plain Starlette endpoint.

    Clients poll this route more than all others together, so the application
    serves it with this endpoint, placed ahead of the FastAPI route above (which
    stays for the OpenAPI document): FastAPI's parameter and dependency machinery
    would cost a quarter of the route's time, and a path parameter and the
    caller's key are all it takes.
    """
    caller = await read_caller(request)
    view = await caller.services.tasks.get(caller.account_id, request.path_params["task_id"])
    return caller.task_response(view)


MAX_WAIT_SECONDS = 60
_DIGITS = re.compile(r"[0-9]{1,6}")


def _preferred_wait(prefer: str | None) -> int | None:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240), capped at 60 s;
    None when absent or not a number (an unknown preference is ignored)."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            return min(int(value), MAX_WAIT_SECONDS) if _DIGITS.fullmatch(value) else None
    return None


async def _submit(
    caller: Caller,
    workflow: str,
    body: WorkflowSubmit,
    idempotency_key: str | None,
    prefer: str | None,
) -> Response:
    wait = _preferred_wait(prefer)
    view, created = await caller.services.tasks.submit(
        caller.account_id, workflow, body, idempotency_key
    )
    if created:
        TASKS_SUBMITTED.labels(view.task.workflow).inc()
    if wait is not None and not view.task.terminal:
        # Held until the task ends or the wait is over, then answered as it stands.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await caller.services.events.until_terminal(caller.account_id, view.task.id)
        view = await caller.services.tasks.get(caller.account_id, view.task.id)
    response = caller.task_response(view, 201 if created else 200)
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait}"
    return response


@router.post(
    "/tasks",
    status_code=201,
    response_model=TaskObject,
    operation_id="create_task",
    responses=_SUBMIT_RESPONSES,
)
async def create_task(
    body: TaskSubmit,
    caller: WriterDep,
    idempotency_key: IdempotencyKey = None,
    prefer: PreferHeader = None,
) -> Response:
    """Submit a task to a workflow. With ``Prefer: wait=N`` (N ≤ 60) the answer waits
    until the task is terminal or N seconds pass."""
    return await _submit(caller, body.workflow, body, idempotency_key, prefer)


@router.post(
    "/workflows/{name}/tasks",
    status_code=201,
    response_model=TaskObject,
    operation_id="create_workflow_task",
    tags=["workflows"],
    responses=_SUBMIT_RESPONSES,
)
async def create_workflow_task(
    name: str,
    body: WorkflowSubmit,
    caller: WriterDep,
    idempotency_key: IdempotencyKey = None,
    prefer: PreferHeader = None,
) -> Response:
    """Submit a task to the workflow named in the path (``Prefer: wait=N`` as above)."""
    return await _submit(caller, name, body, idempotency_key, prefer)


@router.get("/tasks", response_model=ListObject, operation_id="list_tasks")
async def list_tasks(
    request: Request,
    caller: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    status: Annotated[str | None, Query(description="Comma-separated statuses.")] = None,
    workflow: str | None = None,
    created_after: Annotated[str | None, Query(description="ISO 8601 time.")] = None,
    created_before: Annotated[str | None, Query(description="ISO 8601 time.")] = None,
) -> Response:
    """List the account's tasks, newest first. Filter on metadata with
    ``metadata[key]=value``."""
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]") and len(key) > len("metadata[]")
    }
    views, more, next_cursor = await caller.services.tasks.list(
        caller.account_id,
        limit=limit,
        cursor=cursor,
        statuses=[s.strip() for s in status.split(",") if s.strip()] if status else None,
        workflow=workflow,
        created_after=_time(created_after, "created_after"),
        created_before=_time(created_before, "created_before"),
        metadata=metadata or None,
    )
    now = now_us()
    return caller.with_limit_headers(
        json_response(
            {
                "object": "list",
                "data": [
                    task_object(view, caller.base_url, now, caller.services.signer)
                    for view in views
                ],
                "has_more": more,
                "next_cursor": next_cursor,
            }
        )
    )


def _time(value: str | None, param: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise InvalidParam(f"{param} is not an ISO 8601 time: {value!r}", param=param) from exc


@router.post("/tasks/query", response_model=TaskObject, operation_id="query_task")
async def query_task(body: TaskQuery, caller: ReaderDep) -> Response:
    """Find a task by ``task_id`` or by ``out_task_id`` (exactly one)."""
    view = await caller.services.tasks.query(caller.account_id, body.task_id, body.out_task_id)
    return caller.with_limit_headers(
        task_response(view, caller.base_url, signer=caller.services.signer)
    )


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=TaskObject,
    operation_id="cancel_task",
    responses={202: {"description": "Cancellation requested; the task is still running"}},
)
async def cancel_task(task_id: str, caller: WriterDep) -> Response:
    """Cancel a task: at once when queued (200); a running task is asked to stop (202)
    and ends cancelled within the grace period."""
    view = await caller.services.tasks.cancel(caller.account_id, task_id)
    status = 202 if view.task.status.value == "running" else 200
    return caller.with_limit_headers(
        task_response(view, caller.base_url, status, caller.services.signer)
    )


@router.delete("/tasks/{task_id}", operation_id="delete_task")
async def delete_task(task_id: str, caller: WriterDep) -> Response:
    """Purge a completed, failed or cancelled task and its events."""
    await caller.services.tasks.delete(caller.account_id, task_id)
    return caller.with_limit_headers(
        json_response({"id": task_id, "object": "task", "deleted": True})
    )
