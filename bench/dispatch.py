"""Dispatch latency on an idle server: from just before the client's POST to the moment
the handler runs (the ``bench_stamp`` workflow returns ``time.time()``)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from probe import Probe
from procs import wait_for


@dataclass(frozen=True, slots=True)
class DispatchResult:
    #: From just before the POST to the handler's timestamp.
    samples_ms: list[float]
    #: The POST's round trip alone (the handler may run before it returns).
    post_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.samples_ms, 99)

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.samples_ms)
        return {
            "samples": len(ordered),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(percentile(ordered, 90), 3),
            "p99_ms": round(self.p99_ms, 3),
            "min_ms": round(ordered[0], 3),
            "max_ms": round(ordered[-1], 3),
            "mean_ms": round(statistics.fmean(ordered), 3),
            "post_p50_ms": round(percentile(self.post_ms, 50), 3),
            "post_p99_ms": round(percentile(self.post_ms, 99), 3),
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def measure_dispatch(
    client: httpx.Client, probe: Probe, *, samples: int, warmup: int
) -> DispatchResult:
    """Submit ``bench_stamp`` tasks one at a time, each after the previous completed.

    Completion is watched in the database (cheap, and no load on the server's
    event loop); the measure itself is the handler's own timestamp.
    """
    latencies: list[float] = []
    posts: list[float] = []
    for i in range(warmup + samples):
        sent = time.time()
        response = client.post("/v1/tasks", json={"workflow": "bench_stamp", "input": {}})
        returned = time.time()
        if response.status_code != 201:
            raise RuntimeError(f"submit failed: {response.status_code} {response.text}")
        task_id = response.json()["id"]
        stamp = handler_time(probe, task_id)
        if i >= warmup:
            latencies.append((stamp - sent) * 1000)
            posts.append((returned - sent) * 1000)
    return DispatchResult(latencies, posts)


def handler_time(probe: Probe, task_id: str, timeout: float = 30) -> float:
    found: list[tuple[str, Any]] = []

    def done() -> bool:
        state = probe.task(task_id)
        if state is None or state[0] in ("queued", "running"):
            return False
        found.append(state)
        return True

    wait_for(done, timeout=timeout, interval=0.002, what=f"task {task_id} to finish")
    status, output = found[0]
    if status != "completed":
        raise RuntimeError(f"task {task_id} ended {status}")
    return float(output[0]["t"])
