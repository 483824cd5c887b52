"""Credit amounts: integers of 1/1000 credit, decimal strings on the wire."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

SCALE = 1000


def parse_credits(value: str | int | Decimal) -> int:
    """``"12.345"`` → 12345 millicredits. Raises ValueError on bad or too precise input."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    millis = amount * SCALE
    if millis != millis.to_integral_value():
        raise ValueError(f"more than 3 decimal places: {value!r}")
    return int(millis)


def format_credits(millis: int) -> str:
    """12345 → ``"12.345"``; 1000 → ``"1"``; 1500 → ``"1.5"``."""
    sign = "-" if millis < 0 else ""
    whole, frac = divmod(abs(millis), SCALE)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:03d}".rstrip("0")
