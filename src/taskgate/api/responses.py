"""JSON responses built from plain dicts (the presenters' output)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from taskgate.api.errors import error_response
from taskgate.api.presenters import retry_after, task_object
from taskgate.core.clock import now_us
from taskgate.services.signing import Signer
from taskgate.services.tasks import TaskView

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": None, "description": description}
    for status, description in {
        400: "Bad request (`invalid_param`, `invalid_json`)",
        401: "Missing, malformed or revoked API key (`invalid_api_key`)",
        404: "Not found",
        422: "Invalid value (`invalid_param`)",
    }.items()
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def task_response(
    view: TaskView, base_url: str, status: int = 200, signer: Signer | None = None
) -> Response:
    now = now_us()
    hint = retry_after(view, now)
    headers = {"Retry-After": str(hint)} if hint is not None else None
    return json_response(task_object(view, base_url, now, signer), status, headers)


__all__ = ["ERROR_RESPONSES", "error_response", "json_response", "task_response"]
