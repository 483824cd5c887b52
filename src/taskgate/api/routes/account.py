"""``/v1/account``: settings of the caller's account."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from taskgate.api.deps import ReaderDep
from taskgate.api.responses import ERROR_RESPONSES, json_response
from taskgate.payloads import CallbackSecretObject

router = APIRouter(prefix="/v1/account", tags=["account"], responses=ERROR_RESPONSES)


@router.get(
    "/callback-secret", response_model=CallbackSecretObject, operation_id="get_callback_secret"
)
async def get_callback_secret(caller: ReaderDep) -> Response:
    """The secret that signs this account's per-task callbacks (``callback_url``),
    per Standard Webhooks: verify each callback with it."""
    secret = await caller.services.deliveries.callback_secret(caller.account_id)
    return caller.with_limit_headers(json_response({"object": "callback_secret", "secret": secret}))
