"""Prometheus metrics.

In ``serve`` and ``worker`` the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a
directory in the data dir before anything imports prometheus_client, so counters
and histograms recorded by worker processes appear on the API's ``/metrics``.
Gauges of the queue are read from the database at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_LATENCY = Histogram(
    "taskgate_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TASKS_SUBMITTED = Counter(
    "taskgate_tasks_submitted_total", "Tasks created, by workflow.", ["workflow"]
)
TASKS_FINISHED = Counter(
    "taskgate_tasks_finished_total",
    "Attempts that ended, by workflow and resulting status (queued: retried).",
    ["workflow", "status"],
)
TASK_DURATION = Histogram(
    "taskgate_task_duration_seconds",
    "Run time of attempts, from claim to end, by workflow and resulting status.",
    ["workflow", "status"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


class QueueCollector(Collector):
    """``taskgate_tasks{status}`` for queued and running tasks, read at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        gauge = GaugeMetricFamily(
            "taskgate_tasks", "Tasks not yet finished, by status.", labels=["status"]
        )
        for status in ("queued", "running"):
            gauge.add_metric([status], counts.get(status, 0))
        yield gauge
        yield GaugeMetricFamily(
            "taskgate_queue_depth", "Tasks waiting to be claimed.", value=counts.get("queued", 0)
        )


class _Default(Collector):
    """The metrics of this process (when not in multiprocess mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def registry_for_scrape(queue_counts: Callable[[], dict[str, int]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    registry.register(QueueCollector(queue_counts))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def prepare_multiprocess_dir(directory: Path) -> None:
    """Create the directory and drop the files of processes that no longer run."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
