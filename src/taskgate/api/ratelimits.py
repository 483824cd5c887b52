"""Rate limits per API key and route class, counted with the ``limits`` library.

Two classes: ``reads`` (get, query, list, events) and ``writes`` (submit, cancel,
delete, uploads). Each has a server default (``TASKGATE_RATE_LIMIT_READS`` /
``_WRITES``) that an account may override; ``unlimited`` turns a class off. A limit
string may combine limits (``10/second;1000/day``): a request must pass all of them.

The counters use the *moving window* strategy: at most ``q`` requests in any span of
``w`` seconds, which is what "60 requests per minute" promises. A fixed window would
let a client send twice that across a window boundary, and ``limits`` counts the
requests a fixed window refuses; the moving window never counts a refused request,
and the time until its oldest entry leaves is exactly when the next request will
pass, so ``Retry-After`` is never early. It keeps one timestamp per counted request
(at most ``q`` per key and limit), which costs the same CPU as a fixed window in
memory and one more round trip than it with Redis.

Limited routes take :data:`taskgate.api.deps.ReaderDep` or ``WriterDep``; the check
runs before the route touches a service, so a refused request writes nothing. Every
response after the check carries the IETF draft headers::

    RateLimit-Policy: "reads";q=60;w=60
    RateLimit: "reads";r=59;t=42

describing the limit with the fewest requests left.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from limits import RateLimitItem
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from taskgate.core.errors import RateLimited
from taskgate.core.ratelimits import parse_rate_limit

if TYPE_CHECKING:
    from taskgate.api.deps import Caller

log = logging.getLogger(__name__)

Policy = Literal["reads", "writes"]
READS: Final = "reads"
WRITES: Final = "writes"
# Where a request's quota waits for the error handlers (api/errors.py), so that an
# error response after the check carries the headers too.
SCOPE_KEY: Final = "taskgate.rate_limit"
KEY_PREFIX: Final = "taskgate"
# How long a Redis outage may hold up a request before it is let through.
REDIS_TIMEOUT_SECONDS: Final = 1.0
_STORAGE_WARNING_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class Quota:
    """Where one key stands against one limit."""

    policy: str
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` in the IETF draft form."""
        return {"RateLimit-Policy": policy_header(self), "RateLimit": state_header(self)}

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-policy", policy_header(self).encode()),
            (b"ratelimit", state_header(self).encode()),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "limit": self.limit,
            "window_seconds": self.window_seconds,
            "remaining": self.remaining,
            "reset_seconds": self.reset_seconds,
        }


def policy_header(quota: Quota) -> str:
    """``"reads";q=60;w=60``: the quota and its window in seconds."""
    return f'"{quota.policy}";q={quota.limit};w={quota.window_seconds}'


def state_header(quota: Quota) -> str:
    """``"reads";r=59;t=42``: requests left, and seconds until the window frees one."""
    return f'"{quota.policy}";r={quota.remaining};t={quota.reset_seconds}'


def async_storage(url: str) -> tuple[str, dict[str, Any]]:
    """A ``limits`` storage URL for the asyncio API, and the options it needs.

    Settings name storages as people write them (``memory://``, ``redis://host``).
    The asyncio storages of ``limits`` take the same URLs behind ``async+``; for Redis
    they default to the coredis client, which taskgate does not install, so they are
    told to use redis-py's asyncio client (``limits[redis]`` installs redis-py).
    """
    scheme = url.partition("://")[0]
    if not scheme.startswith("async+"):
        url = f"async+{url}"
        scheme = f"async+{scheme}"
    options: dict[str, Any] = {"wrap_exceptions": True}
    if scheme.startswith("async+redis"):
        options.update(
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
    return url, options


class RateLimiter:
    """Counts requests per API key and class in one storage; one per application."""

    def __init__(self, storage_url: str, *, reads: str, writes: str) -> None:
        url, options = async_storage(storage_url)
        self._strategy = MovingWindowRateLimiter(storage_from_string(url, **options))
        self._defaults: dict[str, str] = {READS: reads, WRITES: writes}
        # Each distinct limit string parsed once: the defaults and the overrides.
        self._parsed: dict[str, tuple[RateLimitItem, ...]] = {}
        for policy, spec in self._defaults.items():
            self._defaults[policy] = spec = spec.strip()
            self._parsed[spec] = parse_rate_limit(spec)
        self._warned_at = -math.inf

    def limits(self, policy: Policy, override: str | None = None) -> tuple[RateLimitItem, ...]:
        """The limits of a class for an account (``override``: the account's own
        limit string, None for the server's default); empty when unlimited."""
        spec = override if override is not None else self._defaults[policy]
        try:
            return self._parsed[spec]
        except KeyError:
            pass
        try:
            items = parse_rate_limit(spec.strip())
        except ValueError:
            # The service validates overrides; one written around it falls back to
            # the server's default rather than failing every request of the account.
            log.error("invalid %s rate limit %r: using the default", policy, spec)
            items = self._parsed[self._defaults[policy]]
        self._parsed[spec] = items
        return items

    async def hit(self, policy: Policy, key_id: str, override: str | None = None) -> Quota | None:
        """Count one request of a key; its quota afterwards, or None when unlimited.

        Raises :class:`LimitExceeded` (not counting the request) when a limit has no
        request left. Limits are counted shortest window first, so a request that a
        longer limit refuses has still used a slot of the shorter ones before it.
        When the storage cannot be reached the request passes, unheaded.
        """
        items = self.limits(policy, override)
        if not items:
            return None
        strategy = self._strategy
        try:
            for item in items:
                if not await strategy.hit(item, policy, key_id):
                    quotas = await self._quotas(policy, key_id, items)
                    raise LimitExceeded(min(quotas, key=_tightness))
            if len(items) == 1:
                return await self._quota(policy, key_id, items[0])
            return min(await self._quotas(policy, key_id, items), key=_tightness)
        except StorageError as exc:
            self._storage_failed(exc)
            return None

    async def describe(
        self, key_id: str, *, reads: str | None = None, writes: str | None = None
    ) -> list[Quota]:
        """Where a key stands against every limit of both classes, without counting."""
        classes: tuple[tuple[Policy, str | None], ...] = ((READS, reads), (WRITES, writes))
        found: list[Quota] = []
        try:
            for policy, override in classes:
                found.extend(await self._quotas(policy, key_id, self.limits(policy, override)))
        except StorageError as exc:
            self._storage_failed(exc)
        return found

    async def _quotas(
        self, policy: str, key_id: str, items: tuple[RateLimitItem, ...]
    ) -> list[Quota]:
        return [await self._quota(policy, key_id, item) for item in items]

    async def _quota(self, policy: str, key_id: str, item: RateLimitItem) -> Quota:
        stats = await self._strategy.get_window_stats(item, policy, key_id)
        remaining = max(0, stats.remaining)
        # A moving window frees its oldest entry at reset_time; a full quota has
        # nothing to free.
        reset = 0 if remaining >= item.amount else math.ceil(stats.reset_time - time.time())
        return Quota(policy, item.amount, item.get_expiry(), remaining, max(0, reset))

    def _storage_failed(self, exc: StorageError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _STORAGE_WARNING_SECONDS:
            self._warned_at = now
            log.warning("rate-limit storage unavailable, not limiting: %s", exc.storage_error)


class LimitExceeded(RateLimited):
    """429 ``rate_limited``, with the quota that refused the request."""

    def __init__(self, quota: Quota) -> None:
        retry_after = max(1, quota.reset_seconds)
        super().__init__(
            f"Too many {quota.policy}: at most {quota.limit} per {quota.window_seconds} "
            f"seconds for this API key. Retry in {retry_after} seconds.",
            retry_after=retry_after,
        )
        self.quota = quota


async def describe(caller: Caller) -> list[dict[str, Any]]:
    """The caller's key against every limit of its account, for ``GET /v1/usage``:
    ``[{policy, limit, window_seconds, remaining, reset_seconds}]``; an unlimited
    class has no entry."""
    quotas = await caller.limiter.describe(
        caller.key_id, reads=caller.rate_limit_reads, writes=caller.rate_limit_writes
    )
    return [quota.as_dict() for quota in quotas]


def _tightness(quota: Quota) -> tuple[int, int]:
    # Fewest requests left first; of those, the one that frees a request last.
    return quota.remaining, -quota.reset_seconds
