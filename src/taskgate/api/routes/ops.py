"""Operations: health, readiness, metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from taskgate.api.deps import ServicesDep
from taskgate.api.responses import json_response
from taskgate.core.errors import Unavailable
from taskgate.metrics import registry_for_scrape, render

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="healthz")
async def healthz() -> Response:
    """The process is up (no dependencies checked)."""
    return json_response({"status": "ok"})


@router.get("/readyz", operation_id="readyz")
async def readyz(services: ServicesDep) -> Response:
    """The database answers and its schema is current."""
    if not await services.ops.ready():
        raise Unavailable("The database is unreachable or its schema is out of date.")
    return json_response({"status": "ready"})


@router.get("/metrics", operation_id="metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    counts = await services.ops.queue_counts()
    body = render(registry_for_scrape(lambda: counts))
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
