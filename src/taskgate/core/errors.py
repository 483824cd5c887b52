"""The one error tree of the server. Each error carries a stable code and its HTTP status.

::

    TaskgateError
    ├── InvalidParam          400 invalid_param (422 when the request's content is invalid)
    ├── InvalidJson           400 invalid_json
    ├── Unauthenticated       401 invalid_api_key
    ├── InsufficientCredits   402 insufficient_credits
    ├── NotFound              404 not_found / task_not_found / workflow_not_found / …
    ├── Conflict              409 idempotency_conflict / task_not_cancellable / task_running
    ├── PayloadTooLarge       413 body_too_large
    ├── RateLimited           429 rate_limited
    └── Unavailable           503 unavailable

The API translates them to ``{"error": {"code", "message", "param"?, "details"?,
"request_id"}}`` at one boundary (``taskgate.api.errors``).
"""

from __future__ import annotations

from typing import Any

from taskgate.core.money import format_credits


class TaskgateError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.details = details


class InvalidParam(TaskgateError):
    status = 400
    code = "invalid_param"


class InvalidInput(InvalidParam):
    """The request is well formed but a value in it is not acceptable."""

    status = 422


class InvalidJson(TaskgateError):
    status = 400
    code = "invalid_json"


class Unauthenticated(TaskgateError):
    status = 401
    code = "invalid_api_key"


class InsufficientCredits(TaskgateError):
    status = 402
    code = "insufficient_credits"

    def __init__(self, *, needed: int, available: int) -> None:
        super().__init__(
            f"This task needs {format_credits(needed)} credits; "
            f"{format_credits(available)} are available.",
            details={"needed": format_credits(needed), "available": format_credits(available)},
        )
        self.needed = needed
        self.available = available


class NotFound(TaskgateError):
    status = 404
    code = "not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"No task {task_id!r}.")


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"No workflow named {name!r}.", param="workflow")


class WebhookNotFound(NotFound):
    code = "webhook_not_found"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"No webhook endpoint {endpoint_id!r}.")


class AccountNotFound(NotFound):
    code = "account_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class Conflict(TaskgateError):
    status = 409
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class TaskNotCancellable(Conflict):
    code = "task_not_cancellable"


class TaskRunning(Conflict):
    code = "task_running"


class PayloadTooLarge(TaskgateError):
    status = 413
    code = "body_too_large"


class RateLimited(TaskgateError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(TaskgateError):
    status = 503
    code = "unavailable"
