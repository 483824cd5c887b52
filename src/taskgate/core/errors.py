"""The one error tree of the server. Each error carries a stable code and its HTTP status.

::

    TaskgateError
    ├── InvalidParam          400 invalid_param (422 when the request's content is invalid)
    ├── InvalidJson           400 invalid_json
    ├── Unauthenticated       401 invalid_api_key
    ├── InsufficientCredits   402 insufficient_credits
    ├── Forbidden             403 invalid_signature / link_expired
    ├── NotFound              404 not_found / task_not_found / workflow_not_found /
    │                             webhook_not_found / delivery_not_found / …
    ├── Conflict              409 idempotency_conflict / task_not_cancellable / task_running /
    │                             file_in_use / webhook_disabled
    ├── Gone                  410 file_expired
    ├── PayloadTooLarge       413 body_too_large / file_too_large
    ├── UnsupportedMediaType  415 unsupported_media_type
    ├── InvalidFile           422 invalid_file
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


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"No delivery {delivery_id!r} of this webhook endpoint.")


class FileNotFound(NotFound):
    code = "file_not_found"

    def __init__(self, file_id: str, *, param: str | None = None) -> None:
        super().__init__(f"No file {file_id!r}.", param=param)


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


class FileInUse(Conflict):
    code = "file_in_use"


class WebhookDisabled(Conflict):
    code = "webhook_disabled"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(
            f"Webhook endpoint {endpoint_id!r} is disabled: enable it to deliver again."
        )


class Forbidden(TaskgateError):
    """A signed link that does not open what it names."""

    status = 403
    code = "invalid_signature"


class LinkExpired(Forbidden):
    code = "link_expired"


class Gone(TaskgateError):
    status = 410
    code = "file_expired"


class PayloadTooLarge(TaskgateError):
    status = 413
    code = "body_too_large"


class FileTooLarge(PayloadTooLarge):
    code = "file_too_large"


class UnsupportedMediaType(TaskgateError):
    status = 415
    code = "unsupported_media_type"


class InvalidFile(TaskgateError):
    """Bytes of an accepted type that do not decode, or decode to too much."""

    status = 422
    code = "invalid_file"


class RateLimited(TaskgateError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(TaskgateError):
    status = 503
    code = "unavailable"
