"""Retry and waiting settings shared by every plan, and the configuration from the
environment."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Config:
    """How hard the client retries and how it waits.

    Every delay is capped by a wait's deadline, so these bound effort, never a wait's
    length.
    """

    #: Retries of a read, a create or a cancel after a network error, 429 or 502–504.
    max_retries: int = 3
    #: First backoff delay (seconds); it doubles per retry up to ``backoff_cap``.
    backoff_base: float = 0.25
    backoff_cap: float = 8.0
    #: A 429 asking to wait longer than this is raised instead of retried (outside waits).
    max_retry_after: float = 60.0
    #: Seconds without a byte after which an event stream counts as broken (the server
    #: sends a keep-alive comment every 15 s by default).
    stream_read_timeout: float = 45.0
    #: Consecutive stream failures after which a wait polls instead.
    stream_failures_before_polling: int = 2

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based): exponential, with jitter
        (half to all of it) so that many clients do not retry in step."""
        delay = min(self.backoff_cap, self.backoff_base * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)


def resolve_base_url(base_url: str | None) -> str:
    """The argument, else ``TASKGATE_BASE_URL``, else ``http://127.0.0.1:8000``."""
    return (base_url or os.environ.get("TASKGATE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    """The argument, else ``TASKGATE_API_KEY`` (None: requests go without a key)."""
    return api_key or os.environ.get("TASKGATE_API_KEY") or None
