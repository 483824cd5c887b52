"""The SDK's one exception tree, built from the server's error codes.

::

    TaskgateError                     anything this SDK raises on purpose
    ├── APIError                      the server answered with an error (status, code,
    │   │                             message, param, details, request_id)
    │   ├── InvalidRequestError       400 / 422 invalid_param, invalid_json, …
    │   ├── AuthenticationError       401 invalid_api_key
    │   ├── InsufficientCreditsError  402 insufficient_credits (.needed, .available)
    │   ├── NotFoundError             404 not_found, task_not_found, workflow_not_found, …
    │   ├── ConflictError             409 task_not_cancellable, task_running, …
    │   │   └── IdempotencyConflictError  409 idempotency_conflict
    │   ├── RateLimitError            429 rate_limited (.retry_after)
    │   └── ServerError               5xx internal_error, unavailable
    ├── APIConnectionError            no answer: refused, reset, timed out
    ├── TaskFailedError               a waited-for task failed (.task, .error)
    ├── TaskCancelledError            a waited-for task was cancelled (.task)
    └── WaitTimeoutError              a wait ran out of time (.task_id, .task); the task
                                      goes on, and ``tasks.wait(task_id)`` resumes it

Any other status (403, 405, 410, 413, 415…) is a plain :class:`APIError`.
"""

from __future__ import annotations

from typing import Any

from taskgate.client._effects import Reply
from taskgate.payloads import TaskError, TaskObject


class TaskgateError(Exception):
    """Base of every error the SDK raises on purpose."""


class APIError(TaskgateError):
    """The server answered with an error: ``{"error": {code, message, param?, details?,
    request_id}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        param: str | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.details = details
        self.request_id = request_id


class InvalidRequestError(APIError):
    """400 or 422: the request or a value in it is not acceptable (see ``param``)."""


class AuthenticationError(APIError):
    """401: the API key is missing, malformed or revoked."""


class InsufficientCreditsError(APIError):
    """402: the balance cannot cover the task's estimate; nothing was created."""

    @property
    def needed(self) -> str | None:
        """Credits the task would reserve (a decimal string)."""
        return None if self.details is None else self.details.get("needed")

    @property
    def available(self) -> str | None:
        """Credits the account has available (a decimal string)."""
        return None if self.details is None else self.details.get("available")


class NotFoundError(APIError):
    """404: no such task, workflow or route (another account's task is one too)."""


class ConflictError(APIError):
    """409: the request conflicts with the resource's state."""


class IdempotencyConflictError(ConflictError):
    """409 ``idempotency_conflict``: the idempotency key was used for a different
    request."""


class RateLimitError(APIError):
    """429: over the key's rate limit; ``retry_after`` says when to ask again."""

    def __init__(self, message: str, *, retry_after: float | None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server failed or is unavailable; reads and creates are retried."""


class APIConnectionError(TaskgateError):
    """No answer from the server: the connection was refused, reset or timed out."""


class TaskFailedError(TaskgateError):
    """A waited-for task ended ``failed``; ``error`` is its code and message."""

    def __init__(self, task: TaskObject) -> None:
        self.task = task
        self.error: TaskError | None = task.error
        detail = f"{task.error.code}: {task.error.message}" if task.error else "no error given"
        super().__init__(f"task {task.id} failed ({detail})")


class TaskCancelledError(TaskgateError):
    """A waited-for task ended ``cancelled``."""

    def __init__(self, task: TaskObject) -> None:
        self.task = task
        super().__init__(f"task {task.id} was cancelled")


class WaitTimeoutError(TaskgateError):
    """A wait ran out of time before the task ended. The task goes on; wait for it
    again with ``tasks.wait(error.task_id)``. ``task`` is the last state seen."""

    def __init__(self, task_id: str, timeout: float, task: TaskObject | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.task = task
        status = f" (last seen {task.status})" if task is not None else ""
        super().__init__(f"task {task_id} did not finish within {timeout:g} s{status}")


def retry_after(reply: Reply) -> float | None:
    """The reply's ``Retry-After`` in seconds (delta form), if it has one."""
    value = reply.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def api_error(reply: Reply) -> APIError:
    """The :class:`APIError` an error reply stands for."""
    body = reply.json_or_none()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    status = reply.status
    code = str(error.get("code") or f"http_{status}")
    message = str(error.get("message") or reply.text[:500] or "no message")
    details = error.get("details")
    fields: dict[str, Any] = {
        "status": status,
        "code": code,
        "param": error.get("param"),
        "details": details if isinstance(details, dict) else None,
        "request_id": error.get("request_id") or reply.headers.get("x-request-id"),
    }
    if status == 429:
        return RateLimitError(message, retry_after=retry_after(reply), **fields)
    kind: type[APIError]
    if status in (400, 422):
        kind = InvalidRequestError
    elif status == 401:
        kind = AuthenticationError
    elif status == 402:
        kind = InsufficientCreditsError
    elif status == 404:
        kind = NotFoundError
    elif status == 409:
        kind = IdempotencyConflictError if code == "idempotency_conflict" else ConflictError
    elif status >= 500:
        kind = ServerError
    else:
        kind = APIError
    return kind(message, **fields)
