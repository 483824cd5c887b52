"""``/v1/webhooks``: the account's webhook endpoints.

Reading counts against the key's ``reads`` limit, changing against ``writes``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from taskgate.api.deps import ReaderDep, WriterDep
from taskgate.api.presenters import delivery_object, webhook_object
from taskgate.api.responses import ERROR_RESPONSES, json_response
from taskgate.core.errors import InvalidInput
from taskgate.payloads import (
    DeletedObject,
    DeliveryObject,
    ListObject,
    WebhookCreate,
    WebhookObject,
    WebhookUpdate,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=WebhookObject, operation_id="create_webhook")
async def create_webhook(body: WebhookCreate, caller: WriterDep) -> Response:
    """Register an endpoint. Its signing secret is in this response (and after a
    rotation) only."""
    endpoint = await caller.services.webhooks.create(
        caller.account_id,
        url=body.url,
        description=body.description,
        enabled_events=body.enabled_events,
    )
    return caller.with_limit_headers(json_response(webhook_object(endpoint, with_secret=True), 201))


@router.get("", response_model=ListObject, operation_id="list_webhooks")
async def list_webhooks(
    caller: ReaderDep,
    limit: Annotated[int, Query(description="1–100")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """The account's endpoints, newest first."""
    found, more = await caller.services.webhooks.list(caller.account_id, limit=limit, cursor=cursor)
    return caller.with_limit_headers(
        json_response(
            {
                "object": "list",
                "data": [webhook_object(endpoint) for endpoint in found],
                "has_more": more,
                "next_cursor": found[-1].id if more and found else None,
            }
        )
    )


@router.get("/{webhook_id}", response_model=WebhookObject, operation_id="get_webhook")
async def get_webhook(webhook_id: str, caller: ReaderDep) -> Response:
    endpoint = await caller.services.webhooks.get(caller.account_id, webhook_id)
    return caller.with_limit_headers(json_response(webhook_object(endpoint)))


@router.patch("/{webhook_id}", response_model=WebhookObject, operation_id="update_webhook")
async def update_webhook(webhook_id: str, body: WebhookUpdate, caller: WriterDep) -> Response:
    """Change the url, description, events or status; fields left out stay. Setting
    ``status: enabled`` re-enables an endpoint the server disabled."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    for name in ("url", "enabled_events", "status"):
        if name in changes and changes[name] is None:
            raise InvalidInput(f"{name} cannot be null.", param=name)
    endpoint = await caller.services.webhooks.update(caller.account_id, webhook_id, changes)
    return caller.with_limit_headers(json_response(webhook_object(endpoint)))


@router.delete("/{webhook_id}", response_model=DeletedObject, operation_id="delete_webhook")
async def delete_webhook(webhook_id: str, caller: WriterDep) -> Response:
    await caller.services.webhooks.delete(caller.account_id, webhook_id)
    return caller.with_limit_headers(
        json_response({"id": webhook_id, "object": "webhook_endpoint", "deleted": True})
    )


@router.post(
    "/{webhook_id}/rotate-secret", response_model=WebhookObject, operation_id="rotate_secret"
)
async def rotate_webhook_secret(webhook_id: str, caller: WriterDep) -> Response:
    """A new signing secret. For 24 hours deliveries carry signatures of both the new
    and the previous secret, so the receiver can switch without missing any."""
    endpoint = await caller.services.webhooks.rotate_secret(caller.account_id, webhook_id)
    return caller.with_limit_headers(json_response(webhook_object(endpoint, with_secret=True)))


@router.get("/{webhook_id}/deliveries", response_model=ListObject, operation_id="list_deliveries")
async def list_deliveries(
    webhook_id: str,
    caller: ReaderDep,
    limit: Annotated[int, Query(description="1–100")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    status: Annotated[str | None, Query(description="pending, delivered or failed")] = None,
) -> Response:
    """The endpoint's deliveries, newest first, each with every attempt made."""
    found, more = await caller.services.deliveries.list(
        caller.account_id, webhook_id, limit=limit, cursor=cursor, status=status
    )
    return caller.with_limit_headers(
        json_response(
            {
                "object": "list",
                "data": [delivery_object(view) for view in found],
                "has_more": more,
                "next_cursor": found[-1].delivery.id if more and found else None,
            }
        )
    )


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=DeliveryObject,
    operation_id="test_webhook",
)
async def test_webhook(webhook_id: str, caller: WriterDep) -> Response:
    """Send a ``webhook.test`` event to the endpoint (even while it is disabled);
    follow it in the endpoint's deliveries."""
    view = await caller.services.deliveries.send_test(caller.account_id, webhook_id)
    return caller.with_limit_headers(json_response(delivery_object(view), 202))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryObject,
    operation_id="retry_delivery",
)
async def retry_delivery(webhook_id: str, delivery_id: str, caller: WriterDep) -> Response:
    """Deliver again now, with a fresh retry schedule: a failed delivery, or a
    delivered one the receiver lost."""
    view = await caller.services.deliveries.retry(caller.account_id, webhook_id, delivery_id)
    return caller.with_limit_headers(json_response(delivery_object(view), 202))
