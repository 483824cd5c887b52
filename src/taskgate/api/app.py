"""The FastAPI application, built around the services the composition root made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.routing import Route
from starlette.types import ASGIApp

from taskgate import __version__
from taskgate.api import errors
from taskgate.api.middleware import Edge
from taskgate.api.presenters import event_object
from taskgate.api.ratelimits import RateLimiter
from taskgate.api.routes import (
    account,
    admin,
    events,
    files,
    ops,
    tasks,
    usage,
    webhooks,
    workflows,
)
from taskgate.composition import Services
from taskgate.services.backoff import Backoff
from taskgate.services.channel import API

log = logging.getLogger(__name__)

# How often the API writes the last_used_at of the keys it saw.
KEY_USE_FLUSH_SECONDS = 5.0


def create_app(services: Services, *, base_url: str = "", access_log: bool = True) -> ASGIApp:
    """The ASGI application: FastAPI wrapped in the request-id and body-limit edge."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(_flush_key_use(services))
        # Workers' and other API processes' writes wake the event streams and the
        # deliverer through the channel.
        wakeups = services.channel.listen(
            API, f"api-{os.getpid()}", lambda _message: services.events_written()
        )
        services.events.start()
        services.deliveries.start(
            lambda event: event_object(event, _app.state.base_url, services.signer)
        )
        maintenance = asyncio.create_task(services.maintenance.run(), name="taskgate-maintenance")
        try:
            yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            wakeups.close()
            await services.deliveries.stop()
            await services.events.stop()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await services.accounts.flush_key_use()

    app = FastAPI(
        title="taskgate",
        version=__version__,
        description="A self-hosted asynchronous task API for generative media.",
        lifespan=lifespan,
        # taskgate exports Prometheus metrics itself; FastAPI's OpenTelemetry hooks
        # would only cost a check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.base_url = base_url.rstrip("/")
    settings = services.settings
    app.state.rate_limiter = RateLimiter(
        settings.rate_limit_storage_url,
        reads=settings.rate_limit_reads,
        writes=settings.rate_limit_writes,
    )
    errors.install(app)
    # Routes are matched in order, each miss costing a few microseconds: the
    # polling route comes first, the documentation pages last.
    app.include_router(tasks.router)
    app.include_router(workflows.router)
    app.include_router(events.router)
    app.include_router(usage.router)
    app.include_router(webhooks.router)
    app.include_router(files.router)
    app.include_router(account.router)
    if settings.admin_token:
        app.include_router(admin.router)
    app.include_router(ops.router)
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes.sort(key=lambda route: getattr(route, "path", None) in docs)
    app.router.routes.insert(
        0, Route("/v1/tasks/{task_id}", tasks.poll_task, methods=["GET"], include_in_schema=False)
    )
    _document_bearer_auth(app)
    if services.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=services.settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After", "RateLimit", "RateLimit-Policy"],
        )
    return Edge(app, max_body_bytes=services.settings.max_body_bytes, access_log=access_log)


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare in the OpenAPI document that every /v1 route takes a bearer key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "tg_live_… key"}
            }
            for path, operations in schema["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _flush_key_use(services: Services) -> None:
    # (the backoff only keeps an outage of the database to one log line)
    backoff = Backoff("recording key use", log)
    while True:
        await asyncio.sleep(KEY_USE_FLUSH_SECONDS)
        try:
            await services.accounts.flush_key_use()
            backoff.succeeded()
        except Exception as exc:
            backoff.failed(exc)
