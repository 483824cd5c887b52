"""The operations of the API, each written once as a plan (see ``_effects``): the
request it makes, the retries it allows, and the model it returns."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from pydantic import BaseModel

from taskgate.client._config import Config
from taskgate.client._effects import Call, Emit, Plan, Reply, Request, SaveBody, Sleep
from taskgate.client._errors import APIConnectionError, APIError, api_error, retry_after
from taskgate.payloads import ListObject, TaskObject, UsageObject, WorkflowObject

#: Answers worth asking again: over the rate limit, and a gateway or server that is
#: unavailable. A 500 is not retried: it would most likely fail the same way.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Answers that say the server did not act on a request: safe to retry any request.
UNPROCESSED_STATUSES = frozenset({429, 503})


class Ctx(Protocol):
    """What a plan needs of the object it is called on."""

    @property
    def config(self) -> Config: ...


def task_path(task_id: str, *rest: str) -> str:
    return "/".join(["/v1/tasks", quote(task_id, safe=""), *rest])


def send(
    config: Config,
    request: Request | SaveBody,
    *,
    retries: int | None = None,
    deadline: float | None = None,
    repeatable: bool = True,
) -> Plan[Reply]:
    """Send ``request`` (or save its body, for a :class:`SaveBody`); a successful
    reply is returned, an error reply raised as its :class:`APIError`. A network
    error, 429 or 502–504 is retried ``retries`` times (default
    ``config.max_retries``; None with a deadline: until the deadline) after
    ``Retry-After`` or an exponential backoff.

    Only a request that is safe to repeat may be ``repeatable``: a read, a create
    with its idempotency key, or a cancel. Any other is retried only after a 429 or
    503, answers that mean the server did not act on it; a network error, which
    leaves it unknown whether it did, is raised at once."""
    effect = Call(request) if isinstance(request, Request) else request
    retry_statuses = RETRY_STATUSES if repeatable else UNPROCESSED_STATUSES
    limit = config.max_retries if retries is None and deadline is None else retries
    attempt = 0
    while True:
        error: APIError | APIConnectionError
        try:
            reply: Reply = yield effect
        except APIConnectionError as exc:
            if not repeatable:
                raise
            error = exc
            delay = config.backoff(attempt)
        else:
            if reply.ok:
                return reply
            error = api_error(reply)
            if reply.status not in retry_statuses:
                raise error
            hint = retry_after(reply)
            delay = hint if hint is not None else config.backoff(attempt)
            if deadline is None and delay > config.max_retry_after:
                raise error
        if limit is not None and attempt >= limit:
            raise error
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise error
            delay = min(delay, left)
        attempt += 1
        yield Sleep(delay)


def paged(
    config: Config, path: str, params: Mapping[str, str | int], model: type[BaseModel]
) -> Plan[None]:
    """Emit every item of a list route (``{data, has_more, next_cursor}``) as a
    ``model``, fetching the next page only once the caller has taken the last one."""
    cursor: str | None = None
    while True:
        page_params = dict(params) if cursor is None else {**params, "cursor": cursor}
        reply = yield from send(config, Request("GET", path, params=page_params))
        page = ListObject.model_validate_json(reply.content)
        for item in page.data:
            yield Emit(model.model_validate(item))
        if not page.has_more or page.next_cursor is None:
            return
        cursor = page.next_cursor


# -- workflows and usage ------------------------------------------------------


def list_workflows(ctx: Ctx) -> Plan[list[WorkflowObject]]:
    """Every workflow of the catalogue: input schema, estimate, price list."""
    reply = yield from send(ctx.config, Request("GET", "/v1/workflows"))
    page = ListObject.model_validate_json(reply.content)
    return [WorkflowObject.model_validate(item) for item in page.data]


def get_workflow(ctx: Ctx, name: str) -> Plan[WorkflowObject]:
    """One workflow by name; :class:`NotFoundError` (``workflow_not_found``) if none."""
    reply = yield from send(ctx.config, Request("GET", f"/v1/workflows/{quote(name, safe='')}"))
    return WorkflowObject.model_validate_json(reply.content)


def get_usage(ctx: Ctx) -> Plan[UsageObject]:
    """The account's credits, running and queued tasks, and rate limits."""
    reply = yield from send(ctx.config, Request("GET", "/v1/usage"))
    return UsageObject.model_validate_json(reply.content)


# -- tasks ----------------------------------------------------------------------


def create_task(
    ctx: Ctx,
    workflow: str,
    input: Mapping[str, Any] | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    priority: int | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    callback_events: Sequence[str] | None = None,
) -> Plan[TaskObject]:
    """Submit a task. It always carries an ``Idempotency-Key`` (a new uuid4 unless
    given), so the retries after a network error, 429 or 503 can never create a
    second task: the server answers a repeat with the task the key created. The
    same key with a different request raises :class:`IdempotencyConflictError`.

    ``callback_url`` receives the task's terminal event (and the types in
    ``callback_events``), signed with the account's callback secret."""
    body: dict[str, Any] = {"workflow": workflow, "input": dict(input or {})}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if priority is not None:
        body["priority"] = priority
    if callback_url is not None:
        body["callback_url"] = callback_url
    if callback_events is not None:
        body["callback_events"] = list(callback_events)
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    request = Request("POST", "/v1/tasks", json=body, headers={"Idempotency-Key": key})
    reply = yield from send(ctx.config, request)
    return TaskObject.model_validate_json(reply.content)


def get_task(ctx: Ctx, task_id: str) -> Plan[TaskObject]:
    """A task as it stands; :class:`NotFoundError` (``task_not_found``) if none."""
    reply = yield from send(ctx.config, Request("GET", task_path(task_id)))
    return TaskObject.model_validate_json(reply.content)


def query_task(
    ctx: Ctx, *, task_id: str | None = None, out_task_id: str | None = None
) -> Plan[TaskObject]:
    """A task by its id or by the ``out_task_id`` it was submitted with (give exactly
    one)."""
    body = {
        name: value
        for name, value in (("task_id", task_id), ("out_task_id", out_task_id))
        if value is not None
    }
    reply = yield from send(ctx.config, Request("POST", "/v1/tasks/query", json=body))
    return TaskObject.model_validate_json(reply.content)


def cancel_task(ctx: Ctx, task_id: str) -> Plan[TaskObject]:
    """Cancel a task: a queued one at once; a running one is asked to stop (its
    status stays ``running`` until it ends ``cancelled``). :class:`ConflictError`
    (``task_not_cancellable``) if it has already ended otherwise."""
    reply = yield from send(ctx.config, Request("POST", task_path(task_id, "cancel")))
    return TaskObject.model_validate_json(reply.content)


def list_tasks(
    ctx: Ctx,
    *,
    status: str | Iterable[str] | None = None,
    workflow: str | None = None,
    limit: int | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Plan[None]:
    """The account's tasks, newest first, fetched a page at a time (``limit`` tasks
    a page, 1–100) as the iteration goes on. ``status`` is one status or several."""
    params: dict[str, str | int] = {}
    if status is not None:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if workflow is not None:
        params["workflow"] = workflow
    if limit is not None:
        params["limit"] = limit
    if created_after is not None:
        params["created_after"] = created_after
    if created_before is not None:
        params["created_before"] = created_before
    for key, value in (metadata or {}).items():
        params[f"metadata[{key}]"] = value
    return (yield from paged(ctx.config, "/v1/tasks", params, TaskObject))
