"""Domain records → wire payloads (the canonical ``/v1`` shapes)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from taskgate.core.clock import MICROS, iso, now_us
from taskgate.core.models import Account, ApiKey, Event, Task, WebhookEndpoint
from taskgate.core.money import format_credits, parse_credits
from taskgate.core.states import TaskStatus
from taskgate.services.billing import Balance
from taskgate.services.signing import Signer
from taskgate.services.tasks import TaskView
from taskgate.workflows.sdk import Rates, Workflow


def task_object(
    view: TaskView, base_url: str, now: int | None = None, signer: Signer | None = None
) -> dict[str, Any]:
    """The task object; with a signer, ``links.events`` carries a stream token (for
    browsers' EventSource, which cannot send the API key)."""
    task = view.task
    now = now_us() if now is None else now
    self_url = f"{base_url}/v1/tasks/{task.id}"
    events_url = f"{self_url}/events"
    if signer is not None:
        events_url += "?token=" + signer.stream_token(task.account_id, task.id, now / MICROS)
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
        "usage": task.usage or _NO_USAGE,
        "billing": billing_object(task),
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
            "events": events_url,
        },
    }


_NO_USAGE: dict[str, Any] = {"lines": [], "credits": "0"}


def billing_object(task: Task) -> dict[str, Any]:
    """Credits of a task: estimated and reserved from submit on; charged and
    refunded once it is terminal (null until then)."""
    charged, refunded = task.charged_credits, task.refunded_credits
    return {
        "estimated_credits": format_credits(task.estimated_credits),
        "reserved_credits": format_credits(task.reserved_credits),
        "charged_credits": format_credits(charged) if charged is not None else None,
        "refunded_credits": format_credits(refunded) if refunded is not None else None,
        "currency": "credits",
    }


def event_object(event: Event, base_url: str) -> dict[str, Any]:
    """An event's payload: ``{id, type, created_at, data: <task object>}``."""
    task = Task.from_mapping(event.data)
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso(event.created_at),
        "data": task_object(TaskView(task), base_url, event.created_at),
    }


def snapshot_object(view: TaskView, base_url: str, now: int) -> dict[str, Any]:
    """The first event of a task's stream: the task as it stands."""
    return {
        "id": None,
        "type": "task.snapshot",
        "created_at": iso(now),
        "data": task_object(view, base_url, now),
    }


def usage_object(balance: Balance, rate_limits: list[dict[str, Any]]) -> dict[str, Any]:
    account = balance.account
    return {
        "object": "usage",
        "account_id": account.id,
        "balance": format_credits(balance.available),
        "reserved": format_credits(balance.reserved),
        "charged_period": format_credits(balance.charged_period),
        "charged_total": format_credits(balance.charged_total),
        "period_start": iso(balance.period_start),
        "running": account.running,
        "queued": balance.queued,
        "concurrency_limit": account.concurrency_limit,
        "rate_limits": rate_limits,
        "currency": "credits",
    }


def account_object(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "object": "account",
        "name": account.name,
        "concurrency_limit": account.concurrency_limit,
        "running": account.running,
        "balance": format_credits(account.credits_available),
        "reserved": format_credits(account.credits_reserved),
        "charged_total": format_credits(account.credits_charged),
        "rate_limit_reads": account.rate_limit_reads,
        "rate_limit_writes": account.rate_limit_writes,
        "created_at": iso(account.created_at),
    }


def key_object(key: ApiKey, plaintext: str | None = None) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "account_id": key.account_id,
        "prefix": key.prefix,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
        "key": plaintext,
    }


def webhook_object(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "description": endpoint.description,
        "enabled_events": endpoint.enabled_events,
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
        "secret": endpoint.secret if with_secret else None,
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
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
        "pricing": _pricing(wf),
    }


def _decimal(value: Decimal | str) -> str:
    return format(Decimal(value).normalize(), "f")


def _pricing(wf: Workflow[Any]) -> list[dict[str, str]] | None:
    """A price list's rates; None when the price is the estimate or computed."""
    if not isinstance(wf.price, Rates):
        return None
    return [
        {"meter": meter, "unit": rate.unit, "credits": _decimal(rate.credits)}
        for meter, rate in wf.price.rates.items()
    ]
