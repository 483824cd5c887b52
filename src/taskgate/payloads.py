"""HTTP payload models shared by the API and the client SDK. Imports only pydantic."""

from __future__ import annotations

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
    usage: dict[str, Any] | None
    attempts: int
    max_attempts: int
    callback_url: str | None
    callback_events: list[str] | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    cancel_requested_at: str | None
    links: TaskLinks


class WorkflowEstimate(BaseModel):
    credits: str
    seconds: float


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
