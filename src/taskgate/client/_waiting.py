"""Following a task to its end: its event stream, and waiting for it.

A wait reads the task's event stream, which reports each change at once. When the
stream fails ``stream_failures_before_polling`` times in a row (refused, reset,
closed early, timed out, 429, 5xx) the wait polls ``GET /v1/tasks/{id}`` instead,
fast at first and then at the pace the server's ``Retry-After`` (or the task's
``estimated_seconds``) suggests, so a queued task is asked about less often. Through
network errors, 429 and 503 it keeps retrying, until its deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from taskgate.client._config import Config
from taskgate.client._effects import CloseStream, Emit, OpenStream, Plan, ReadLine, Request, Sleep
from taskgate.client._errors import (
    APIConnectionError,
    APIError,
    RateLimitError,
    TaskCancelledError,
    TaskFailedError,
    WaitTimeoutError,
    api_error,
    retry_after,
)
from taskgate.client._plans import RETRY_STATUSES, Ctx, get_task, send, task_path
from taskgate.client._sse import TERMINAL_STATUSES, SseParser, TaskEvent, task_event
from taskgate.payloads import TaskObject

#: Poll delays start here and double per poll until they reach the server's hint.
FIRST_POLL_SECONDS = 0.1


class _Deadline(Exception):
    """The wait's deadline passed while reading its stream."""


def _transient(exc: APIError | APIConnectionError) -> bool:
    return isinstance(exc, APIConnectionError) or exc.status in RETRY_STATUSES


def _delay_after(config: Config, exc: APIError | APIConnectionError, failures: int) -> float:
    if isinstance(exc, RateLimitError) and exc.retry_after is not None:
        return exc.retry_after
    return config.backoff(failures)


def _open(task_id: str, after: int | None, read_timeout: float) -> Plan[bool]:
    """Open the task's stream (after event ``after``); False when the server answers
    204: the task ended with that event."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    request = Request(
        "GET", task_path(task_id, "events"), headers=headers, read_timeout=read_timeout
    )
    reply = yield OpenStream(request)
    if reply.status == 204:
        return False
    if reply.status != 200:
        raise api_error(reply)
    return True


def _next_event(parser: SseParser, deadline: float | None) -> Plan[TaskEvent | None]:
    """The stream's next event; None once the server closed it."""
    while True:
        line = yield ReadLine()
        if line is None:
            return None
        message = parser.feed(line)
        if message is not None and message.data:
            return task_event(message)
        if deadline is not None and time.monotonic() >= deadline:
            raise _Deadline


def stream_task(ctx: Ctx, task_id: str, last_event_id: int | str | None = None) -> Plan[None]:
    """The task's events: a ``task.snapshot`` (left out when resuming after
    ``last_event_id``), then each change, ending after the terminal one. A dropped
    connection is resumed with ``Last-Event-ID`` (after ``max_retries`` failures in a
    row it raises)."""
    config = ctx.config
    after = None if last_event_id is None else int(last_event_id)
    failures = 0
    while True:
        try:
            if not (yield from _open(task_id, after, config.stream_read_timeout)):
                return
            parser = SseParser()
            while (event := (yield from _next_event(parser, None))) is not None:
                failures = 0
                after = event.sequence
                yield Emit(event)
                if event.terminal:
                    yield CloseStream()
                    return
            error: APIError | APIConnectionError = APIConnectionError(
                f"the event stream of {task_id} closed before the task ended"
            )
        except (APIError, APIConnectionError) as exc:
            if not _transient(exc):
                raise
            error = exc
        if failures >= config.max_retries:
            raise error
        yield Sleep(_delay_after(config, error, failures))
        failures += 1


def poll_delay(polls: int, task: TaskObject, hint: float | None) -> float:
    """Seconds until the next poll: ``FIRST_POLL_SECONDS`` doubling per poll, up to
    the server's ``Retry-After`` — or, without one, a fifth of the task's
    ``estimated_seconds`` (0.5–30 s; 5 s queued, 2 s running when it has none)."""
    if hint is None:
        if task.estimated_seconds is not None:
            hint = min(30.0, max(0.5, task.estimated_seconds / 5))
        else:
            hint = 5.0 if task.status == "queued" else 2.0
    return min(FIRST_POLL_SECONDS * 2.0**polls, hint)


def _with_links(ctx: Ctx, task: TaskObject) -> Plan[TaskObject]:
    """The completed task as ``GET`` shows it: events carry outputs without their
    signed download links, which are made per read. If the read fails, the event's
    task is the answer."""
    yield CloseStream()
    try:
        return (yield from get_task(ctx, task.id))
    except (APIError, APIConnectionError):
        return task


def _ignore(task: TaskObject) -> None:
    pass


def _finish(task: TaskObject) -> TaskObject:
    if task.status == "failed":
        raise TaskFailedError(task)
    if task.status == "cancelled":
        raise TaskCancelledError(task)
    return task


def wait_task(
    ctx: Ctx,
    task_id: str,
    timeout: float | None = None,
    *,
    on_update: Callable[[TaskObject], object] | None = None,
) -> Plan[TaskObject]:
    """Wait until the task ends: return it completed, raise :class:`TaskFailedError`
    or :class:`TaskCancelledError`, or :class:`WaitTimeoutError` after ``timeout``
    seconds (None: no limit). Survives dropped connections, restarts of the server,
    429 and 503 (see the module's docstring). ``on_update`` is called with the task
    each time the wait learns of its state (each event, each poll): to show
    progress."""
    config = ctx.config
    if on_update is None:
        on_update = _ignore
    deadline = None if timeout is None else time.monotonic() + timeout
    last: TaskObject | None = None
    after: int | None = None
    stream_failures = polls = errors = 0

    def left() -> float:
        return float("inf") if deadline is None else deadline - time.monotonic()

    def timed_out() -> WaitTimeoutError:
        return WaitTimeoutError(task_id, timeout or 0.0, last)

    while True:
        if last is not None and last.status in TERMINAL_STATUSES:
            yield CloseStream()
            return _finish(last)
        if left() <= 0:
            yield CloseStream()
            raise timed_out()
        error: APIError | APIConnectionError | None = None
        if stream_failures < config.stream_failures_before_polling:
            try:
                read_timeout = min(config.stream_read_timeout, max(0.05, left()))
                if (yield from _open(task_id, after, read_timeout)):
                    parser = SseParser()
                    while (event := (yield from _next_event(parser, deadline))) is not None:
                        stream_failures = errors = 0
                        last, after = event.data, event.sequence
                        if last.status == "completed":
                            last = yield from _with_links(ctx, last)
                        on_update(last)
                        if event.terminal or left() <= 0:
                            break
                    else:
                        stream_failures += 1  # closed before the end
                else:
                    # 204: the task ended with event ``after``; read how.
                    last = yield from get_task(ctx, task_id)
                    on_update(last)
            except _Deadline:
                continue
            except (APIError, APIConnectionError) as exc:
                if not _transient(exc):
                    raise
                error = exc
                stream_failures += 1
        else:
            try:
                reply = yield from send(config, Request("GET", task_path(task_id)), retries=0)
            except (APIError, APIConnectionError) as exc:
                if not _transient(exc):
                    raise
                error = exc
            else:
                errors = 0
                last = TaskObject.model_validate_json(reply.content)
                on_update(last)
                if last.status not in TERMINAL_STATUSES:
                    yield Sleep(min(poll_delay(polls, last, retry_after(reply)), max(0, left())))
                    polls += 1
        if error is not None:
            if left() <= 0:
                yield CloseStream()
                raise timed_out() from error
            yield Sleep(min(_delay_after(config, error, errors), left()))
            errors += 1
