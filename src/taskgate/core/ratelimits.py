"""Rate-limit strings: ``limits`` notation (``60/minute``, ``10/second;1000/day``) or
``unlimited``. Parsed here for the settings, the account services and the API alike."""

from __future__ import annotations

from typing import Final

from limits import RateLimitItem, parse_many

UNLIMITED: Final = "unlimited"


def parse_rate_limit(spec: str) -> tuple[RateLimitItem, ...]:
    """A limit string → its limits, shortest window first; ``unlimited`` → none.

    Raises ValueError for anything else, and for a limit that allows no request.
    """
    spec = spec.strip()
    if spec == UNLIMITED:
        return ()
    try:
        items = parse_many(spec)
    except ValueError as exc:
        raise ValueError(f"{spec!r} is not a rate limit such as '60/minute'") from exc
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(f"{spec!r} allows no requests")
    return tuple(sorted(items, key=lambda item: item.get_expiry()))
