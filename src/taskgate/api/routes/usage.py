"""``/v1/usage``: the caller's credits, work in progress and rate limits."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from taskgate.api import ratelimits
from taskgate.api.deps import CallerDep
from taskgate.api.presenters import usage_object
from taskgate.api.responses import ERROR_RESPONSES, json_response
from taskgate.payloads import UsageObject

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=ERROR_RESPONSES)


@router.get("", response_model=UsageObject, operation_id="get_usage")
async def get_usage(caller: CallerDep) -> Response:
    """Credits available and reserved, charges this month and in all, tasks running
    and queued against the concurrency limit, and where each rate limit stands for
    the calling key (reading them does not count against them)."""
    balance = await caller.services.billing.usage(caller.account_id)
    limits = await ratelimits.describe(caller)
    return json_response(usage_object(balance, limits))
