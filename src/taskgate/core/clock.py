"""Time as integer microseconds since the epoch, and its wire form (ISO 8601 UTC)."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

MICROS = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(seconds: float) -> int:
    return round(seconds * MICROS)


def iso(us: int | None) -> str | None:
    """``2026-11-22T07:47:14.123456Z`` or None."""
    return None if us is None else _iso(us)


@functools.lru_cache(maxsize=8192)
def _iso(us: int) -> str:
    # Cached: a polled task is formatted with the same few timestamps again and again.
    seconds, micros = divmod(us, MICROS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def parse_iso(value: str) -> int:
    """Parse an ISO 8601 timestamp; naive values are taken as UTC."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * MICROS)
