"""The domain core: ids, money, time."""

from __future__ import annotations

import pytest

from taskgate.core.clock import iso, parse_iso
from taskgate.core.ids import has_prefix, new_id, ulid
from taskgate.core.money import format_credits, parse_credits


def test_ids_are_prefixed_and_increase_within_a_process() -> None:
    ids = [new_id("task") for _ in range(2000)]
    assert all(has_prefix(value, "task") for value in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ulid_alphabet_and_length() -> None:
    value = ulid()
    assert len(value) == 26
    assert set(value) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@pytest.mark.parametrize(
    ("text", "millis"),
    [("0", 0), ("1", 1000), ("12.345", 12345), ("0.001", 1), ("1.5", 1500), ("-2", -2000)],
)
def test_parse_credits(text: str, millis: int) -> None:
    assert parse_credits(text) == millis


@pytest.mark.parametrize("text", ["abc", "1.2345", "NaN", "Infinity", ""])
def test_parse_credits_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_credits(text)


@pytest.mark.parametrize(
    ("millis", "text"), [(0, "0"), (1000, "1"), (1500, "1.5"), (12345, "12.345"), (-10, "-0.01")]
)
def test_format_credits(millis: int, text: str) -> None:
    assert format_credits(millis) == text
    assert parse_credits(text) == millis


def test_iso_round_trip() -> None:
    us = 1_782_210_000_123_456
    text = iso(us)
    assert text == "2026-06-23T10:20:00.123456Z"
    assert parse_iso(text) == us
    assert iso(None) is None


def test_parse_iso_naive_is_utc() -> None:
    assert parse_iso("2026-06-23T10:20:00") == parse_iso("2026-06-23T10:20:00+00:00")
    with pytest.raises(ValueError, match="Invalid"):
        parse_iso("yesterday")
