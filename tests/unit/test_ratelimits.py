"""The rate limiter on its in-memory storage: header form, storage URLs, counting,
refusals, several limits in one string, overrides, and the settings' checks."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from taskgate.api.ratelimits import (
    LimitExceeded,
    Quota,
    RateLimiter,
    async_storage,
    policy_header,
    state_header,
)
from taskgate.settings import Settings


def test_headers_take_the_ietf_draft_form() -> None:
    quota = Quota("reads", limit=60, window_seconds=60, remaining=59, reset_seconds=42)
    assert policy_header(quota) == '"reads";q=60;w=60'
    assert state_header(quota) == '"reads";r=59;t=42'
    assert quota.headers() == {
        "RateLimit-Policy": '"reads";q=60;w=60',
        "RateLimit": '"reads";r=59;t=42',
    }
    assert quota.raw_headers() == [
        (b"ratelimit-policy", b'"reads";q=60;w=60'),
        (b"ratelimit", b'"reads";r=59;t=42'),
    ]
    assert quota.as_dict() == {
        "policy": "reads",
        "limit": 60,
        "window_seconds": 60,
        "remaining": 59,
        "reset_seconds": 42,
    }


def test_storage_urls_map_onto_the_asyncio_storages() -> None:
    assert async_storage("memory://") == ("async+memory://", {"wrap_exceptions": True})
    url, options = async_storage("redis://127.0.0.1:6379/2")
    assert url == "async+redis://127.0.0.1:6379/2"
    # limits' asyncio Redis storage defaults to coredis; taskgate installs redis-py.
    assert options["implementation"] == "redispy"
    assert options["key_prefix"] == "taskgate"
    assert async_storage("rediss://h")[0] == "async+rediss://h"
    assert async_storage("async+redis://h")[0] == "async+redis://h"
    assert async_storage("redis+sentinel://h/mymaster")[1]["implementation"] == "redispy"


def test_hits_count_down_and_a_refusal_is_not_counted() -> None:
    async def scenario() -> None:
        limiter = RateLimiter("memory://", reads="3/minute", writes="unlimited")
        seen = [await limiter.hit("reads", "key_a") for _ in range(3)]
        assert [q.remaining for q in seen if q is not None] == [2, 1, 0]
        for quota in seen:
            assert quota is not None
            assert (quota.policy, quota.limit, quota.window_seconds) == ("reads", 3, 60)
            assert 59 <= quota.reset_seconds <= 60
        for _ in range(3):
            with pytest.raises(LimitExceeded) as refused:
                await limiter.hit("reads", "key_a")
            assert refused.value.code == "rate_limited"
            assert refused.value.status == 429
            assert 59 <= refused.value.retry_after <= 60
            assert refused.value.details == {"retry_after": refused.value.retry_after}
            assert refused.value.quota.remaining == 0
        # Another key has its own counter; an unlimited class counts nothing.
        other = await limiter.hit("reads", "key_b")
        assert other is not None and other.remaining == 2
        assert await limiter.hit("writes", "key_a") is None
        (described,) = await limiter.describe("key_a")
        assert (described.policy, described.limit, described.remaining) == ("reads", 3, 0)
        assert 59 <= described.reset_seconds <= 60

    asyncio.run(scenario())


def test_describe_does_not_count_and_a_full_quota_has_nothing_to_reset() -> None:
    async def scenario() -> None:
        limiter = RateLimiter("memory://", reads="60/minute", writes="600/minute")
        for _ in range(3):
            described = await limiter.describe("key_a")
        assert [(q.policy, q.limit, q.remaining, q.reset_seconds) for q in described] == [
            ("reads", 60, 60, 0),
            ("writes", 600, 600, 0),
        ]
        await limiter.hit("writes", "key_a")
        writes = (await limiter.describe("key_a"))[1]
        assert writes.remaining == 599 and 59 <= writes.reset_seconds <= 60
        overridden = await limiter.describe("key_a", reads="unlimited", writes="5/second")
        assert [(q.policy, q.limit, q.window_seconds) for q in overridden] == [("writes", 5, 1)]

    asyncio.run(scenario())


def test_several_limits_all_apply_and_the_tightest_is_reported() -> None:
    async def scenario() -> None:
        limiter = RateLimiter("memory://", reads="unlimited", writes="100/day;2/minute")
        first = await limiter.hit("writes", "key_a")
        assert first is not None
        assert (first.limit, first.window_seconds, first.remaining) == (2, 60, 1)
        await limiter.hit("writes", "key_a")
        with pytest.raises(LimitExceeded) as refused:
            await limiter.hit("writes", "key_a")
        assert refused.value.quota.limit == 2
        described = await limiter.describe("key_a")
        assert [(q.limit, q.window_seconds, q.remaining) for q in described] == [
            (2, 60, 0),
            (100, 86400, 98),
        ]

    asyncio.run(scenario())


def test_overrides_replace_the_default_and_a_bad_one_falls_back() -> None:
    async def scenario() -> None:
        limiter = RateLimiter("memory://", reads="3/minute", writes="unlimited")
        tight = await limiter.hit("reads", "key_a", "1/minute")
        assert tight is not None and (tight.limit, tight.remaining) == (1, 0)
        assert await limiter.hit("reads", "key_a", "unlimited") is None
        fallback = await limiter.hit("reads", "key_b", "not a limit")
        assert fallback is not None and fallback.limit == 3
        # Each distinct string is parsed once.
        assert limiter.limits("reads", "1/minute") is limiter.limits("reads", "1/minute")

    asyncio.run(scenario())


@pytest.mark.parametrize("value", ["0/minute", "sixty", "60/fortnight", ""])
def test_settings_refuse_a_bad_limit(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(rate_limit_reads=value)


def test_settings_take_limits_unlimited_and_known_storages() -> None:
    settings = Settings(
        rate_limit_reads=" unlimited ",
        rate_limit_writes="10/second;1000/day",
        rate_limit_storage_url="redis://127.0.0.1:6379/0",
    )
    assert settings.rate_limit_reads == "unlimited"
    assert settings.rate_limit_writes == "10/second;1000/day"
    with pytest.raises(ValidationError):
        Settings(rate_limit_storage_url="postgres://nope")
