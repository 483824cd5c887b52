"""What the peers' bench tasks record: the handler's start time for the dispatch
latency, and per process how many no-op tasks ran and when, for the drain.

Worker processes of Celery and procrastinate import this through their task
modules; the bench sets ``BENCH_STAMP_PORT`` (a UDP port on 127.0.0.1 where it
reads the stamps) and ``BENCH_COUNT_DIR`` (where each process leaves its counts
when it exits) in their environment.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

HOST = "127.0.0.1"
PORT_ENV = "BENCH_STAMP_PORT"
COUNT_DIR_ENV = "BENCH_COUNT_DIR"

_sock: socket.socket | None = None
#: Tasks run by this process, the first one's start and the last one's end.
_ran = {"count": 0, "first": 0.0, "last": 0.0}


def send_stamp(stamp: float) -> None:
    """Send the handler's start time to the bench (a datagram: the handler does
    not wait on the bench)."""
    global _sock
    if _sock is None:
        _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _sock.sendto(repr(stamp).encode(), (HOST, int(os.environ[PORT_ENV])))


def count_start() -> None:
    if _ran["count"] == 0:
        _ran["first"] = time.time()


def count_end() -> None:
    _ran["count"] += 1
    _ran["last"] = time.time()


def write_counts() -> None:
    """Leave this process's counts in ``BENCH_COUNT_DIR`` (called as it exits)."""
    directory = os.environ.get(COUNT_DIR_ENV)
    if directory and _ran["count"]:
        path = Path(directory) / f"{os.getpid()}.json"
        path.write_text(json.dumps({"pid": os.getpid(), **_ran}))


def read_counts(directory: Path) -> tuple[int, float, float]:
    """All processes' tasks, the first start and the last end."""
    counts = [json.loads(path.read_text()) for path in directory.glob("*.json")]
    if not counts:
        return 0, 0.0, 0.0
    return (
        sum(int(c["count"]) for c in counts),
        min(float(c["first"]) for c in counts),
        max(float(c["last"]) for c in counts),
    )


class StampReader:
    """The bench's end: a UDP socket that receives the handlers' stamps."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = int(self.sock.getsockname()[1])

    def read(self, timeout: float) -> float:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(64)
        return float(data)

    def close(self) -> None:
        self.sock.close()
