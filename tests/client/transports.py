"""Transports that sit between the SDK and the real server and break things on
purpose: they lose a response after the server acted on its request, answer 503
without forwarding, or cut an event stream mid-way. Each records what was sent."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import httpx

_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r")
#: Decides, for the n-th matching request (0-based), what to do with it.
Fault = Callable[[int, httpx.Request], str | None]


class FaultyTransport(httpx.BaseTransport):
    """Forwards to the real server over ``httpx.HTTPTransport``, except where
    ``fault(n, request)`` says ``"lose"`` (forward, then raise a ReadError instead of
    returning the answer), ``"503"`` (answer 503 without forwarding) or
    ``"cut:K"`` (forward, then end the body with a ReadError after K events)."""

    def __init__(self, fault: Fault, match: Callable[[httpx.Request], bool]) -> None:
        self.inner = httpx.HTTPTransport()
        self.fault = fault
        self.match = match
        self.sent: list[httpx.Request] = []
        self.matched = 0
        self.seen = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        action = None
        if self.match(request):
            action = self.fault(self.matched, request)
            self.matched += 1
            self.seen.set()
        if action == "503":
            return httpx.Response(
                503,
                json={"error": {"code": "unavailable", "message": "injected", "request_id": "r"}},
            )
        response = self.inner.handle_request(request)
        if action == "lose":
            response.read()
            response.close()
            raise httpx.ReadError("the response was lost", request=request)
        if action is not None and action.startswith("cut:"):
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_Cut(response, int(action[4:]), request),
            )
        return response

    def close(self) -> None:
        self.inner.close()


class _Cut(httpx.SyncByteStream):
    """The body of ``response`` up to the end of its K-th event, then a ReadError."""

    def __init__(self, response: httpx.Response, events: int, request: httpx.Request) -> None:
        self.response = response
        self.events = events
        self.request = request

    def __iter__(self) -> Iterator[bytes]:
        buffer = b""
        assert isinstance(self.response.stream, httpx.SyncByteStream)
        for chunk in self.response.stream:
            buffer += chunk
            ends = [match.end() for match in _BLANK_LINE.finditer(buffer)]
            if len(ends) >= self.events:
                yield buffer[: ends[self.events - 1]]
                raise httpx.ReadError("the connection dropped", request=self.request)
        yield buffer

    def close(self) -> None:
        self.response.close()
