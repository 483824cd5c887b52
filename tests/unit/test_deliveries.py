"""Retry timing, ``Retry-After`` parsing and Standard Webhooks signatures of the
deliverer, checked against independent computations."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from taskgate.core.models import WebhookEndpoint
from taskgate.services.deliveries import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    endpoint_secrets,
    retry_after_seconds,
    sign,
)

SCHEDULE = (5.0, 300.0, 1800.0)


def test_each_failure_waits_its_delay_of_the_schedule_with_jitter() -> None:
    policy = RetryPolicy(SCHEDULE)
    rng = random.Random(7)
    for failures, base in enumerate(SCHEDULE, start=1):
        delays = [policy.delay(failures, None, rng) for _ in range(200)]
        assert all(d is not None and 0.9 * base <= d <= 1.1 * base for d in delays)
        # Jitter spreads retries out rather than repeating one value.
        assert len({round(d or 0, 6) for d in delays}) > 100


def test_the_schedule_runs_out() -> None:
    policy = RetryPolicy(SCHEDULE)
    assert policy.delay(len(SCHEDULE) + 1, None, random.Random(1)) is None
    assert RetryPolicy(()).delay(1, None, random.Random(1)) is None


def test_retry_after_pushes_the_retry_back_but_never_forward() -> None:
    policy = RetryPolicy(SCHEDULE)
    rng = random.Random(3)
    later = policy.delay(1, 120.0, rng)
    assert later == 120.0
    sooner = policy.delay(2, 1.0, rng)
    assert sooner is not None and sooner >= 0.9 * 300
    capped = policy.delay(1, 10 * MAX_RETRY_AFTER, rng)
    assert capped == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_retry_after_in_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, 1_000_000.0) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC).timestamp()
    in_90 = format_datetime(datetime(2026, 11, 22, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(in_90, now) == pytest.approx(90.0)
    past = format_datetime(datetime(2026, 11, 22, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(past, now) == 0.0


def _reference(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_a_signature_matches_an_independent_hmac() -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    body = '{"id":"evt_1","type":"task.completed","data":{"é":"€"}}'
    got = sign([secret], "evt_1", 1_763_812_800, body)
    assert got == _reference(secret, "evt_1", 1_763_812_800, body)


def test_two_secrets_give_two_signatures() -> None:
    first = "whsec_" + base64.b64encode(b"a" * 32).decode()
    second = "whsec_" + base64.b64encode(b"b" * 32).decode()
    got = sign([first, second], "evt_2", 1_700_000_000, "{}").split(" ")
    assert got == [
        _reference(first, "evt_2", 1_700_000_000, "{}"),
        _reference(second, "evt_2", 1_700_000_000, "{}"),
    ]


def _endpoint(previous_expires_at: int | None) -> WebhookEndpoint:
    return WebhookEndpoint(
        id="we_1",
        account_id="acct_1",
        url="https://hooks.example.com/",
        description=None,
        enabled_events=["task.completed"],
        status="enabled",
        disabled_reason=None,
        secret="whsec_new",
        previous_secret="whsec_old" if previous_expires_at is not None else None,
        previous_secret_expires_at=previous_expires_at,
        failing_since=None,
        created_at=0,
        updated_at=0,
    )


def test_the_previous_secret_signs_only_until_it_expires() -> None:
    assert endpoint_secrets(_endpoint(None), 100) == ["whsec_new"]
    assert endpoint_secrets(_endpoint(101), 100) == ["whsec_new", "whsec_old"]
    assert endpoint_secrets(_endpoint(100), 100) == ["whsec_new"]
