"""Task states and event types."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class EventType(StrEnum):
    CREATED = "task.created"
    STARTED = "task.started"
    PROGRESS = "task.progress"
    # A running task whose cancellation was asked for (cancel_requested_at is set).
    CANCEL_REQUESTED = "task.cancel_requested"
    # A task put back in the queue: a retry after a retryable error or a lost
    # worker, or a drain on shutdown.
    REQUEUED = "task.requeued"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    CANCELLED = "task.cancelled"


TERMINAL_EVENT = {
    TaskStatus.COMPLETED: EventType.COMPLETED,
    TaskStatus.FAILED: EventType.FAILED,
    TaskStatus.CANCELLED: EventType.CANCELLED,
}
