"""HTTP payload models shared by the API and the client SDK. Imports only pydantic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500
MAX_IDEMPOTENCY_KEY_CHARS = 255

TaskStatusName = Literal["queued", "running", "completed", "failed", "cancelled"]
EventTypeName = Literal[
    "task.created",
    "task.started",
    "task.progress",
    "task.cancel_requested",
    "task.requeued",
    "task.completed",
    "task.failed",
    "task.cancelled",
]


def check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys are 1–{MAX_METADATA_KEY_CHARS} characters: {key[:50]!r}")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(
                f"values are at most {MAX_METADATA_VALUE_CHARS} characters (key {key!r})"
            )
    return value


def output_files(output: list[dict[str, Any]], key: str = "file_id") -> list[dict[str, Any]]:
    """Every file entry of a task's output, in order: the entries at the top level
    and those a result holds (a track's ``audio``), at any depth. An entry is a dict
    with ``key``; the dicts returned are those of ``output``, not copies."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if key in value:
                found.append(value)
            else:
                for item in value.values():
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(output)
    return found


def map_output_files(
    output: list[dict[str, Any]],
    change: Callable[[dict[str, Any]], dict[str, Any]],
    key: str = "file_id",
) -> list[dict[str, Any]]:
    """A task's output with each file entry (a dict with ``key``, at any depth)
    replaced by ``change(entry)``. ``output`` is not changed; the parts of it that
    hold no file entry are shared, not copied."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if key in value:
                return change(value)
            changed = {name: walk(item) for name, item in value.items()}
            same = all(changed[name] is item for name, item in value.items())
            return value if same else changed
        if isinstance(value, list):
            items = [walk(item) for item in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        return value

    return [walk(item) for item in output]


class WorkflowSubmit(BaseModel):
    """``POST /v1/workflows/{name}/tasks``: a submission to a named workflow."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-10, le=10)
    out_task_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS
    )
    callback_url: AnyHttpUrl | None = None
    callback_events: list[EventTypeName] | None = None

    _metadata = field_validator("metadata")(check_metadata)


class TaskSubmit(WorkflowSubmit):
    """``POST /v1/tasks``."""

    workflow: str = Field(min_length=1, max_length=100)


class TaskQuery(BaseModel):
    """``POST /v1/tasks/query``: exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = None
    out_task_id: str | None = None


class Progress(BaseModel):
    percent: float
    stage: str | None = None
    message: str | None = None


class TaskError(BaseModel):
    code: str
    message: str
    retryable: bool = False


class TaskWarning(BaseModel):
    code: str
    message: str
    field: str | None = None


class TaskLinks(BaseModel):
    self: str
    cancel: str
    events: str


class UsageLine(BaseModel):
    meter: str
    quantity: float
    unit: str
    credits: str


class Usage(BaseModel):
    """Usage meters (``audio_seconds``, ``image_count``…) as extra fields, the lines
    they were priced at, and the total (decimal string)."""

    model_config = ConfigDict(extra="allow")

    lines: list[UsageLine] = Field(default_factory=list)
    credits: str = "0"


class Billing(BaseModel):
    estimated_credits: str
    reserved_credits: str
    #: Null until the task is terminal.
    charged_credits: str | None
    refunded_credits: str | None
    currency: Literal["credits"] = "credits"


class TaskCallback(BaseModel):
    """A task's ``callback_url`` and how its delivery went."""

    url: str
    events: list[str] | None
    #: pending until the terminal event is delivered (delivered) or given up (failed).
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    delivered_at: str | None
    last_error: str | None


class TaskObject(BaseModel):
    id: str
    object: Literal["task"] = "task"
    workflow: str
    workflow_version: str
    status: TaskStatusName
    input: dict[str, Any]
    metadata: dict[str, str]
    out_task_id: str | None
    priority: int
    progress: Progress
    queue_position: int | None
    estimated_seconds: float | None
    estimated_completion: str | None
    output: list[dict[str, Any]]
    warnings: list[TaskWarning]
    error: TaskError | None
    usage: Usage
    billing: Billing
    attempts: int
    max_attempts: int
    callback: TaskCallback | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    cancel_requested_at: str | None
    links: TaskLinks


class WorkflowEstimate(BaseModel):
    credits: str
    seconds: float


class PriceRate(BaseModel):
    meter: str
    unit: str
    credits: str


class WorkflowObject(BaseModel):
    name: str
    object: Literal["workflow"] = "workflow"
    title: str
    description: str
    version: str
    queue: str
    timeout_seconds: float
    max_attempts: int
    input_schema: dict[str, Any]
    estimate: WorkflowEstimate | None = Field(description="For the default input, if it has one.")
    pricing: list[PriceRate] | None = Field(
        description="Credits per unit of each usage meter; null: a run costs its estimate."
    )


class RateLimitState(BaseModel):
    policy: Literal["reads", "writes"]
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int


class UsageObject(BaseModel):
    object: Literal["usage"] = "usage"
    account_id: str
    balance: str = Field(description="Credits available: grants − charged − open reservations.")
    reserved: str = Field(description="Credits held by unfinished tasks.")
    charged_period: str = Field(description="Credits charged since period_start.")
    charged_total: str
    period_start: str = Field(description="Start of the billing period: the month, UTC.")
    running: int
    queued: int
    concurrency_limit: int
    rate_limits: list[RateLimitState] = Field(
        description="Each limited class of routes for the calling key; none when unlimited."
    )
    currency: Literal["credits"] = "credits"


class ListObject(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None
    details: dict[str, Any] | None = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# -- admin -------------------------------------------------------------------

_RATE_LIMIT_DOC = (
    "Per-key limit in `limits` notation (`120/minute`), `unlimited`, or null: the default."
)


class AdminAccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    credits: str | None = Field(default=None, description="Credits granted at once (decimal).")
    concurrency: int = Field(default=4, ge=1, le=10_000)
    rate_limit_reads: str | None = Field(default=None, description=_RATE_LIMIT_DOC)
    rate_limit_writes: str | None = Field(default=None, description=_RATE_LIMIT_DOC)


class AdminAccountUpdate(BaseModel):
    """Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    rate_limit_reads: str | None = Field(default=None, description=_RATE_LIMIT_DOC)
    rate_limit_writes: str | None = Field(default=None, description=_RATE_LIMIT_DOC)
    output_retention_seconds: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="How long outputs live, in seconds; null: the server's default.",
    )


class AdminGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: str = Field(description="Credits to add, a positive decimal string (`12.5`).")
    note: str | None = Field(default=None, max_length=500)


class AccountObject(BaseModel):
    id: str
    object: Literal["account"] = "account"
    name: str
    concurrency_limit: int
    running: int
    balance: str
    reserved: str
    charged_total: str
    rate_limit_reads: str | None
    rate_limit_writes: str | None
    output_retention_seconds: int | None = None
    created_at: str


class KeyObject(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    account_id: str
    prefix: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    key: str | None = Field(
        default=None, description="The key itself: in the create response only."
    )


# -- webhooks ----------------------------------------------------------------


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="http(s) URL of the receiver.")
    description: str | None = Field(default=None, max_length=500)
    enabled_events: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Event types to deliver; default: all but task.progress.",
    )


class WebhookUpdate(BaseModel):
    """Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    enabled_events: list[str] | None = Field(default=None, min_length=1)
    status: Literal["enabled", "disabled"] | None = None


class WebhookObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    description: str | None
    enabled_events: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    secret: str | None = Field(
        default=None, description="Shown on create and by rotate-secret only."
    )
    created_at: str
    updated_at: str


class DeliveryAttempt(BaseModel):
    attempted_at: str
    #: The receiver's HTTP status; null when no answer came.
    status_code: int | None
    duration_ms: int
    #: timeout, connection_error, blocked_address, redirect, http_error…; null on success.
    error: str | None


class DeliveryObject(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_id: str | None
    event_id: str
    event_type: str
    task_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None
    attempts: list[DeliveryAttempt]


class CallbackSecretObject(BaseModel):
    object: Literal["callback_secret"] = "callback_secret"
    secret: str = Field(description="Signs the account's per-task callbacks (Standard Webhooks).")


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: Literal[True] = True


class FileObject(BaseModel):
    """An uploaded input or a produced output."""

    id: str
    object: Literal["file"] = "file"
    filename: str
    purpose: Literal["input", "output"]
    content_type: str
    #: image, audio, video or file.
    type: str
    bytes: int
    #: Lowercase hex SHA-256 of the content.
    sha256: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    #: The task that produced an output.
    task_id: str | None = None
    created_at: str
    expires_at: str
    #: True once retention deleted (or is about to delete) the content.
    expired: bool = False


class FileUrlRequest(BaseModel):
    """``POST /v1/files/{id}/url``."""

    model_config = ConfigDict(extra="forbid")

    expires_in: int | None = Field(
        default=None,
        ge=1,
        description="Seconds; default: the server's link TTL. Never past the file's own expiry.",
    )


class FileUrlObject(BaseModel):
    url: str
    url_expires_at: str
