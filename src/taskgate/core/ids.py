"""Prefixed, time-ordered identifiers (``task_01J…``).

Ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford base32) behind a
prefix that names the kind of object. Within one process they are strictly
increasing, so ordering tasks by id orders them by submission.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as its two base32 digits: a ULID is 13 look-ups.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_lock = threading.Lock()
_last = (0, 0)


def ulid() -> str:
    """A monotonic ULID string (26 characters)."""
    global _last
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        last_ms, last_rand = _last
        if now_ms <= last_ms:
            # Same (or an earlier, after a clock step) millisecond: keep order by
            # incrementing the random part of the previous id.
            now_ms, rand = last_ms, (last_rand + 1) & _RANDOM_MASK
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last = (now_ms, rand)
    # 26 base32 digits carry 130 bits: two zero bits, the 48-bit time, 80 random bits.
    value = (now_ms << 80) | rand
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


_RANDOM_MASK = (1 << 80) - 1
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    """A new id such as ``task_01JD…``."""
    return f"{prefix}_{ulid()}"


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
