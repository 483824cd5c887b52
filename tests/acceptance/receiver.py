"""A webhook receiver on 127.0.0.1 for tests: records every request it gets and
answers as its test tells it to."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

from tests.helpers import wait_until


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: 1 for the first request carrying this webhook-id, 2 for the second…
    nth: int
    #: What the receiver answered.
    status: int

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


#: Decides the answer to a request: (path, nth attempt of its webhook-id) →
#: (status, extra headers).
Answer = Callable[[str, int], tuple[int, dict[str, str]]]


def always_ok(_path: str, _nth: int) -> tuple[int, dict[str, str]]:
    return 200, {}


def fail_first(n: int, status: int = 500) -> Answer:
    """Fail each event's first ``n`` attempts, then accept it."""

    def answer(_path: str, nth: int) -> tuple[int, dict[str, str]]:
        return (status, {}) if nth <= n else (200, {})

    return answer


class Receiver:
    def __init__(self, answer: Answer = always_ok) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                arrived = time.monotonic()
                with receiver._lock:
                    key = headers.get("webhook-id", "")
                    nth = receiver._counts.get(key, 0) + 1
                    receiver._counts[key] = nth
                # The answer may take its time (a test making an attempt hang).
                status, extra = receiver.answer(self.path, nth)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, headers, body, arrived, nth, status)
                    )
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def accepted(self, path: str | None = None) -> list[Received]:
        """Requests answered 2xx (on ``path`` if given), in arrival order."""
        return [
            r for r in self.snapshot() if 200 <= r.status < 300 and (path is None or r.path == path)
        ]

    def wait_accepted(
        self, count: int, *, path: str | None = None, timeout: float = 20
    ) -> list[Received]:
        def enough() -> list[Received] | None:
            found = self.accepted(path)
            return found if len(found) >= count else None

        return wait_until(enough, timeout=timeout, message=f"{count} accepted deliveries")

    def wait_received(self, count: int, *, timeout: float = 20) -> list[Received]:
        """The first ``count`` requests (whatever they were answered), once that many
        have come."""

        def enough() -> list[Received] | None:
            found = self.snapshot()
            return found[:count] if len(found) >= count else None

        return wait_until(enough, timeout=timeout, message=f"{count} webhook requests")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def verify(received: Received, secret: str) -> dict[str, Any]:
    """Check a request's Standard Webhooks signature with the ``standardwebhooks``
    package (raises if it does not verify); returns the payload."""
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


def fail_once(status: int = 500) -> Answer:
    """Fail the very first request the receiver gets, then accept everything."""
    answered: list[int] = []

    def answer(_path: str, _nth: int) -> tuple[int, dict[str, str]]:
        answered.append(status)
        return (status, {}) if len(answered) == 1 else (200, {})

    return answer


@contextmanager
def receiving(answer: Answer = always_ok) -> Iterator[Receiver]:
    """A receiver for the body of a ``with`` (or a fixture)."""
    receiver = Receiver(answer)
    try:
        yield receiver
    finally:
        receiver.close()
