"""The webhook endpoint operations, as plans (see ``_effects``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from taskgate.client._effects import Plan, Request
from taskgate.client._plans import Ctx, paged, send
from taskgate.payloads import CallbackSecretObject, DeletedObject, DeliveryObject, WebhookObject


class _NotGiven:
    """The default of an update's fields: leave the field as it is."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: Leave a field of ``webhooks.update`` unchanged (``None`` clears a description).
NOT_GIVEN: Any = _NotGiven()


def webhook_path(webhook_id: str, *rest: str) -> str:
    return "/".join(
        ["/v1/webhooks", quote(webhook_id, safe=""), *(quote(p, safe="") for p in rest)]
    )


def list_webhooks(ctx: Ctx, *, limit: int | None = None) -> Plan[None]:
    """The account's endpoints, newest first, fetched a page (``limit``, 1–100) at a
    time as the iteration goes on. Secrets are not included."""
    params: dict[str, str | int] = {} if limit is None else {"limit": limit}
    return (yield from paged(ctx.config, "/v1/webhooks", params, WebhookObject))


def create_webhook(
    ctx: Ctx,
    url: str,
    *,
    description: str | None = None,
    enabled_events: Iterable[str] | None = None,
) -> Plan[WebhookObject]:
    """Register an endpoint; ``enabled_events`` defaults to every type but
    ``task.progress``. The result's ``secret`` (``whsec_…``) is shown only here and
    by ``rotate_secret``: keep it to verify deliveries (``verify_webhook``). Not
    retried after a network error (it could register the endpoint twice)."""
    body: dict[str, Any] = {"url": url}
    if description is not None:
        body["description"] = description
    if enabled_events is not None:
        body["enabled_events"] = list(enabled_events)
    reply = yield from send(
        ctx.config, Request("POST", "/v1/webhooks", json=body), repeatable=False
    )
    return WebhookObject.model_validate_json(reply.content)


def get_webhook(ctx: Ctx, webhook_id: str) -> Plan[WebhookObject]:
    """One endpoint; :class:`NotFoundError` (``webhook_not_found``) if none."""
    reply = yield from send(ctx.config, Request("GET", webhook_path(webhook_id)))
    return WebhookObject.model_validate_json(reply.content)


def update_webhook(
    ctx: Ctx,
    webhook_id: str,
    *,
    url: str = NOT_GIVEN,
    description: str | None = NOT_GIVEN,
    enabled_events: Iterable[str] = NOT_GIVEN,
    status: str = NOT_GIVEN,
) -> Plan[WebhookObject]:
    """Change the fields given and leave the others. ``status="enabled"`` re-enables
    an endpoint the server disabled; ``description=None`` clears it."""
    body: dict[str, Any] = {}
    if url is not NOT_GIVEN:
        body["url"] = url
    if description is not NOT_GIVEN:
        body["description"] = description
    if enabled_events is not NOT_GIVEN:
        body["enabled_events"] = list(enabled_events)
    if status is not NOT_GIVEN:
        body["status"] = status
    reply = yield from send(ctx.config, Request("PATCH", webhook_path(webhook_id), json=body))
    return WebhookObject.model_validate_json(reply.content)


def delete_webhook(ctx: Ctx, webhook_id: str) -> Plan[DeletedObject]:
    """Delete an endpoint: nothing more is delivered to it."""
    reply = yield from send(
        ctx.config, Request("DELETE", webhook_path(webhook_id)), repeatable=False
    )
    return DeletedObject.model_validate_json(reply.content)


def rotate_secret(ctx: Ctx, webhook_id: str) -> Plan[WebhookObject]:
    """A new signing secret (in the result's ``secret``). For 24 hours deliveries
    carry signatures of both the new and the previous secret."""
    request = Request("POST", webhook_path(webhook_id, "rotate-secret"))
    reply = yield from send(ctx.config, request, repeatable=False)
    return WebhookObject.model_validate_json(reply.content)


def test_webhook(ctx: Ctx, webhook_id: str) -> Plan[DeliveryObject]:
    """Send the endpoint a ``webhook.test`` event; returns its delivery, which
    ``deliveries`` then lists with each attempt."""
    request = Request("POST", webhook_path(webhook_id, "test"))
    reply = yield from send(ctx.config, request, repeatable=False)
    return DeliveryObject.model_validate_json(reply.content)


def list_deliveries(
    ctx: Ctx, webhook_id: str, *, status: str | None = None, limit: int | None = None
) -> Plan[None]:
    """The endpoint's deliveries, newest first (each with its attempts: time, status
    code, duration, error), fetched a page at a time; ``status`` filters by
    ``pending``, ``delivered`` or ``failed``."""
    params: dict[str, str | int] = {}
    if status is not None:
        params["status"] = status
    if limit is not None:
        params["limit"] = limit
    path = webhook_path(webhook_id, "deliveries")
    return (yield from paged(ctx.config, path, params, DeliveryObject))


def retry_delivery(ctx: Ctx, webhook_id: str, delivery_id: str) -> Plan[DeliveryObject]:
    """Deliver a delivery's event again now (after it failed, or to replay it)."""
    request = Request("POST", webhook_path(webhook_id, "deliveries", delivery_id, "retry"))
    reply = yield from send(ctx.config, request, repeatable=False)
    return DeliveryObject.model_validate_json(reply.content)


def callback_secret(ctx: Ctx) -> Plan[str]:
    """The account's secret that signs per-task callbacks (``callback_url``):
    verify them with ``verify_webhook(body, headers, secret)``."""
    reply = yield from send(ctx.config, Request("GET", "/v1/account/callback-secret"))
    return CallbackSecretObject.model_validate_json(reply.content).secret
