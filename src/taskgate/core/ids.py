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
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid() -> str:
    """A monotonic ULID string (26 characters)."""
    global _last
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        last_ms, last_rand = _last
        if now_ms <= last_ms:
            # Same (or an earlier, after a clock step) millisecond: keep order by
            # incrementing the random part of the previous id.
            now_ms, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last = (now_ms, rand)
    return _encode(now_ms, 10) + _encode(rand & ((1 << 80) - 1), 16)


def new_id(prefix: str) -> str:
    """A new id such as ``task_01JD…``."""
    return f"{prefix}_{ulid()}"


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
