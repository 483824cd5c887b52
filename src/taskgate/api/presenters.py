"""Domain records → wire payloads (the canonical ``/v1`` shapes)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from taskgate.core.clock import MICROS, iso, now_us, parse_iso
from taskgate.core.models import Account, ApiKey, Event, StoredFile, Task, WebhookEndpoint
from taskgate.core.money import format_credits, parse_credits
from taskgate.core.states import TaskStatus
from taskgate.payloads import map_output_files
from taskgate.services.billing import Balance
from taskgate.services.deliveries import DeliveryView
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
        "output": output_list(task.output, base_url, now, signer),
        "warnings": task.warnings or [],
        "error": task.error,
        "usage": task.usage or _NO_USAGE,
        "billing": billing_object(task),
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "callback": callback_object(task),
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


def output_list(
    output: list[dict[str, Any]] | None, base_url: str, now: int, signer: Signer | None
) -> list[dict[str, Any]]:
    """A task's output; each file in it (at the top level or held by a result, such
    as a track's ``audio``) with ``expired`` and, while it lives, a fresh signed
    ``url`` and ``url_expires_at`` (null without a signer)."""
    if not output:
        return []
    return map_output_files(output, lambda item: output_file_entry(item, base_url, now, signer))


def output_file_entry(
    item: dict[str, Any], base_url: str, now: int, signer: Signer | None
) -> dict[str, Any]:
    entry = dict(item)
    expires_at = entry.get("expires_at")
    file_expires = parse_iso(expires_at) if isinstance(expires_at, str) else 0
    expired = file_expires <= now
    url = url_expires = None
    if signer is not None and not expired:
        path, until = signer.file_link(str(item["file_id"]), file_expires, now)
        url, url_expires = base_url + path, iso(until)
    entry.update(url=url, url_expires_at=url_expires, expired=expired)
    return entry


def file_object(record: StoredFile, now: int | None = None) -> dict[str, Any]:
    now = now_us() if now is None else now
    return {
        "id": record.id,
        "object": "file",
        "filename": record.filename,
        "purpose": record.purpose,
        "content_type": record.content_type,
        "type": record.kind,
        "bytes": record.bytes,
        "sha256": record.sha256,
        "width": record.width,
        "height": record.height,
        "duration": record.duration,
        "task_id": record.task_id,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "expired": record.expired(now),
    }


def callback_object(task: Task) -> dict[str, Any] | None:
    """The per-task callback and how its delivery went (null without one)."""
    if task.callback_url is None:
        return None
    return {
        "url": task.callback_url,
        "events": task.callback_events,
        "status": task.callback_status or "pending",
        "attempt_count": task.callback_attempts,
        "delivered_at": iso(task.callback_delivered_at),
        "last_error": task.callback_last_error,
    }


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


def event_object(event: Event, base_url: str, signer: Signer | None = None) -> dict[str, Any]:
    """An event's payload: ``{id, type, created_at, data: <task object>}``: the task
    as the event recorded it, its output files with links signed now (with a
    signer), so that a receiver can fetch them."""
    task = Task.from_event_data(event.data)
    data = task_object(TaskView(task), base_url, event.created_at)
    if signer is not None:
        data["output"] = output_list(task.output, base_url, now_us(), signer)
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso(event.created_at),
        "data": data,
    }


def snapshot_object(
    view: TaskView, base_url: str, now: int, signer: Signer | None = None
) -> dict[str, Any]:
    """The first event of a task's stream: the task as it stands."""
    data = task_object(view, base_url, now)
    if signer is not None:
        data["output"] = output_list(view.task.output, base_url, now, signer)
    return {"id": None, "type": "task.snapshot", "created_at": iso(now), "data": data}


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
        "output_retention_seconds": account.output_retention_seconds,
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


def delivery_object(view: DeliveryView) -> dict[str, Any]:
    delivery = view.delivery
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "webhook_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "task_id": delivery.task_id,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at),
        "attempts": [
            {
                "attempted_at": iso(attempt.attempted_at),
                "status_code": attempt.status_code,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
            }
            for attempt in view.attempts
        ],
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
