"""The one boundary where errors become the JSON error shape.

``{"error": {"code", "message", "param"?, "details"?, "request_id"}}``
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from taskgate.api.context import request_id
from taskgate.api.ratelimits import SCOPE_KEY, Quota
from taskgate.core.errors import RateLimited, TaskgateError, Unavailable

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid_param",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if param is not None:
        body["param"] = param
    if details is not None:
        body["details"] = details
    body["request_id"] = request_id.get()
    return Response(
        content=orjson.dumps({"error": body}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in parts)


def _limit_headers(request: Request) -> dict[str, str] | None:
    """The ``RateLimit`` headers of a request a limited route has counted."""
    quota: Quota | None = request.scope.get(SCOPE_KEY)
    return quota.headers() if quota is not None else None


async def _taskgate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaskgateError)
    if isinstance(exc, Unavailable):
        # Expected while the database is down or restarting: one line, no traceback.
        cause = str(exc.__cause__ or "").strip().partition("\n")[0]
        log.warning("%s: %s %s", exc.code, exc.message, cause)
    elif exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message, exc_info=exc.__cause__ or exc)
    headers = _limit_headers(request)
    if isinstance(exc, RateLimited):
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
    return error_response(
        exc.status, exc.code, exc.message, param=exc.param, details=exc.details, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    response = _invalid_request(exc)
    if (headers := _limit_headers(request)) is not None:
        response.headers.update(headers)
    return response


def _invalid_request(exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            return error_response(400, "invalid_json", "The request body is not valid JSON.")
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request."}
    loc = tuple(first.get("loc", ()))
    where = loc[0] if loc else "body"
    param = _loc(loc[1:]) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    # A well-formed request whose body holds an unacceptable value is a 422; a bad
    # query, path or header parameter is a 400.
    status = 422 if where == "body" else 400
    return error_response(status, "invalid_param", message, param=param)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, TaskgateError):
        # FastAPI turns an error raised while it reads the body (the body limit of a
        # chunked request) into a generic 400; answer with the error itself.
        return await _taskgate_error(_request, exc.__cause__)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "Error."
    if exc.status_code == 404:
        message = "No such route."
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        # Starlette names only the methods of the first route with this path.
        headers = {**(headers or {}), "Allow": _allowed_methods(_request)}
    return error_response(exc.status_code, code, message, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def _unhandled(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on our side.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(TaskgateError, _taskgate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
