"""Domain records → wire payloads (the canonical ``/v1`` shapes)."""

from __future__ import annotations

import math
from typing import Any

from taskgate.core.clock import MICROS, iso, now_us
from taskgate.core.money import format_credits, parse_credits
from taskgate.core.states import TaskStatus
from taskgate.services.tasks import TaskView
from taskgate.workflows.sdk import Workflow


def task_object(view: TaskView, base_url: str, now: int | None = None) -> dict[str, Any]:
    task = view.task
    now = now_us() if now is None else now
    self_url = f"{base_url}/v1/tasks/{task.id}"
    completed = task.status is TaskStatus.COMPLETED
    estimated = view.estimated_seconds
    return {
        "id": task.id,
        "object": "task",
        "workflow": task.workflow,
        "workflow_version": task.workflow_version,
        "status": task.status.value,
        "input": task.input,
        "metadata": task.metadata,
        "out_task_id": task.out_task_id,
        "priority": task.priority,
        "progress": {
            "percent": 100.0 if completed else task.progress_percent,
            "stage": task.progress_stage,
            "message": task.progress_message,
        },
        "queue_position": view.queue_position,
        "estimated_seconds": estimated,
        "estimated_completion": iso(now + round(estimated * MICROS))
        if estimated is not None
        else None,
        "output": task.output or [],
        "warnings": task.warnings or [],
        "error": task.error,
        "usage": task.usage,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "callback_url": task.callback_url,
        "callback_events": task.callback_events,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "completed_at": iso(task.completed_at),
        "cancel_requested_at": iso(task.cancel_requested_at),
        "links": {
            "self": self_url,
            "cancel": f"{self_url}/cancel",
            "events": f"{self_url}/events",
        },
    }


def retry_after(view: TaskView, now: int) -> int | None:
    """A polling hint in seconds: a fifth of the expected remaining time, 1–30."""
    remaining = view.remaining_seconds(now)
    if remaining is None:
        return None
    return max(1, min(30, math.ceil(remaining / 5)))


def workflow_object(wf: Workflow[Any]) -> dict[str, Any]:
    estimate: dict[str, Any] | None
    try:
        default = wf.input.model_validate({})
    except ValueError:
        estimate = None
    else:
        found = wf.estimate_for(default)
        estimate = {
            "credits": format_credits(parse_credits(found.credits)),
            "seconds": found.seconds,
        }
    return {
        "name": wf.name,
        "object": "workflow",
        "title": wf.title,
        "description": wf.description,
        "version": wf.version,
        "queue": wf.queue,
        "timeout_seconds": wf.timeout,
        "max_attempts": wf.max_attempts,
        "input_schema": wf.input.model_json_schema(),
        "estimate": estimate,
    }
