"""Records the services pass around: plain data, no I/O."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from taskgate.core.states import TaskStatus


@dataclass(slots=True)
class Task:
    id: str
    account_id: str
    workflow: str
    workflow_version: str
    queue: str
    status: TaskStatus
    priority: int
    input: dict[str, Any]
    metadata: dict[str, str]
    out_task_id: str | None
    request_hash: str
    callback_url: str | None
    callback_events: list[str] | None
    progress_percent: float
    progress_stage: str | None
    progress_message: str | None
    output: list[dict[str, Any]] | None
    warnings: list[dict[str, Any]] | None
    error: dict[str, Any] | None
    usage: dict[str, Any] | None
    estimated_credits: int
    reserved_credits: int
    charged_credits: int | None
    refunded_credits: int | None
    expected_seconds: float
    timeout_seconds: float
    attempts: int
    max_attempts: int
    run_at: int
    worker_id: str | None
    lease_expires_at: int | None
    created_at: int
    updated_at: int
    started_at: int | None
    completed_at: int | None
    cancel_requested_at: int | None
    event_seq: int
    #: The per-task callback's delivery: pending, delivered or failed (None without
    #: a callback_url), attempts made, last success and last error.
    callback_status: str | None = None
    callback_attempts: int = 0
    callback_delivered_at: int | None = None
    callback_last_error: str | None = None

    @classmethod
    def from_mapping(cls, row: Any) -> Task:
        values = {name: row[name] for name in _TASK_FIELDS}
        values["status"] = TaskStatus(values["status"])
        return cls(**values)

    @classmethod
    def from_event_data(cls, data: dict[str, Any]) -> Task:
        """The task as an event recorded it (events written before a field existed
        lack it: it takes its default)."""
        return cls.from_mapping({**_TASK_DEFAULTS, **data})

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _TASK_FIELDS}
        data["status"] = str(self.status)
        return data

    @property
    def terminal(self) -> bool:
        return self.status.terminal


_TASK_FIELDS = tuple(f.name for f in fields(Task))
_TASK_DEFAULTS = {
    f.name: f.default for f in fields(Task) if not isinstance(f.default, type(MISSING))
}


@dataclass(slots=True)
class Event:
    id: str
    task_id: str
    account_id: str
    seq: int
    type: str
    created_at: int
    data: dict[str, Any]


@dataclass(slots=True)
class Account:
    id: str
    name: str
    concurrency_limit: int
    running: int
    created_at: int
    #: Millicredits: what can still be reserved, what open reservations hold, and
    #: all that was ever charged.
    credits_available: int = 0
    credits_reserved: int = 0
    credits_charged: int = 0
    #: Rate-limit overrides (``limits`` notation); None: the server's default.
    rate_limit_reads: str | None = None
    rate_limit_writes: str | None = None
    #: Signs the account's per-task callbacks (None until first used).
    callback_secret: str | None = None
    #: How long the account's outputs live, in seconds; None: the server's default.
    output_retention_seconds: int | None = None


@dataclass(slots=True)
class LedgerEntry:
    id: int
    account_id: str
    task_id: str | None
    kind: str
    amount: int
    created_at: int
    note: str | None


@dataclass(slots=True)
class ApiKey:
    id: str
    account_id: str
    prefix: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


@dataclass(slots=True)
class WebhookEndpoint:
    id: str
    account_id: str
    url: str
    description: str | None
    enabled_events: list[str]
    status: str  # enabled or disabled
    disabled_reason: str | None
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: int | None
    failing_since: int | None
    created_at: int
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class StoredFile:
    """An uploaded input or a produced output; its blob is at :attr:`key`."""

    id: str
    account_id: str
    purpose: str  # input or output
    filename: str
    content_type: str
    kind: str  # image, audio, video or file
    bytes: int
    sha256: str
    width: int | None
    height: int | None
    duration: float | None
    task_id: str | None
    source_url: str | None
    created_at: int
    expires_at: int
    #: When retention deleted the blob (None while it is kept).
    expired_at: int | None = None

    @property
    def key(self) -> str:
        return f"files/{self.id}"

    def expired(self, now: int) -> bool:
        return self.expired_at is not None or self.expires_at <= now

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
