"""The outermost ASGI layer: request ids, the JSON body limit, metrics, access log.

It wraps the whole FastAPI application (outside Starlette's error middleware), so
that every response, a 500 included, carries ``X-Request-Id``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskgate.api.context import request_id
from taskgate.api.errors import error_response
from taskgate.core.errors import PayloadTooLarge
from taskgate.metrics import HTTP_LATENCY

log = logging.getLogger("taskgate.access")

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# The upload routes: they take multipart bodies and enforce their own limit while
# streaming. Anywhere else a multipart body is read as JSON, under the JSON limit.
_UPLOAD_PATHS = frozenset({"/v1/files"})
#: The scope key under which the edge leaves the server's own ``send``.
RAW_SEND = "taskgate.raw_send"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _RequestIds:
    """``req_`` + 8 random bytes drawn once per process + a counter: unique across
    processes and restarts without reading the system's random source per request."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = "req_" + os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"


_new_request_id = _RequestIds()


class Edge:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        content_type = b""
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _VALID_REQUEST_ID.match(candidate) else None
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
        rid = rid or _new_request_id()
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                MutableHeaders(scope=message).append("X-Request-Id", rid)
            await send(message)

        # Long-lived streams send their body chunks straight to the server (the
        # wrappers of the layers in between only look at the response's start).
        scope[RAW_SEND] = send
        try:
            limited: Receive | None = receive
            if scope["method"] in _WITH_BODY or length:
                limited = self._limit(scope, receive, content_type, length)
            if limited is None:
                await error_response(413, "body_too_large", self._too_large_message())(
                    scope, receive, send_with_id
                )
                return
            await self.app(scope, limited, send_with_id)
        except Exception:
            if not started:
                raise
            # Starlette's error middleware re-raises after sending its 500.
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(elapsed)
            if self.access_log:
                log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed * 1000)
            request_id.reset(token)

    def _too_large_message(self) -> str:
        return f"The request body is larger than {self.max_body_bytes} bytes."

    def _limit(
        self, scope: Scope, receive: Receive, content_type: bytes, length: int | None
    ) -> Receive | None:
        """The receive channel, counting bytes; None if Content-Length is already too big.

        Multipart uploads to the upload routes are exempt: those enforce their own
        limit while streaming.
        """
        if content_type.startswith(b"multipart/") and scope["path"] in _UPLOAD_PATHS:
            return receive
        if not content_type.startswith(b"application/json") and scope["method"] in _WITH_BODY:
            # The API takes JSON or multipart only: read any other body as JSON, so a
            # client that forgot the header gets invalid_json, not a confusing 422.
            scope["headers"] = [
                (name, value) for name, value in scope["headers"] if name != b"content-type"
            ] + [(b"content-type", b"application/json")]
        if length is not None and length > self.max_body_bytes:
            return None
        limit = self.max_body_bytes
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(self._too_large_message())
            return message

        return counting
