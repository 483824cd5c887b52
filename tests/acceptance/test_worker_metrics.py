"""Operations endpoints: /metrics carries the API's and the worker's metrics and the
queue gauges; /readyz reports a ready database."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.worker_support import submit, wait_status
from tests.helpers import ServerProcess, wait_until

pytestmark = pytest.mark.acceptance


def _samples(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_metrics_cover_the_api_the_queue_and_the_workers(server: ServerProcess) -> None:
    with server.client() as http:
        # Both slots busy, three tasks waiting: the gauges have something to show.
        blockers = [submit(http, "stubborn", {"seconds": 60}) for _ in range(2)]
        for task_id in blockers:
            wait_status(http, task_id, "running", timeout=10)
        probes = [submit(http, "probe", {"seconds": 0}) for _ in range(3)]

        samples = _samples(http)
        assert _value(samples, "taskgate_tasks", status="running") == 2
        assert _value(samples, "taskgate_tasks", status="queued") == 3
        assert _value(samples, "taskgate_queue_depth") == 3
        submits = _value(
            samples,
            "taskgate_http_request_duration_seconds_count",
            method="POST",
            route="/v1/tasks",
            status="201",
        )
        assert submits == 5

        for task_id in blockers:
            assert http.post(f"/v1/tasks/{task_id}/cancel").status_code == 202
        for task_id in [*blockers, *probes]:
            wait_status(http, task_id, timeout=10)

        # Recorded in the worker process, served by the API process.
        def finished() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            found = _samples(http)
            done = _value(
                found, "taskgate_tasks_finished_total", workflow="probe", status="completed"
            )
            return found if done == 3 else None

        samples = wait_until(finished, timeout=5, message="the worker's metrics")
        assert (
            _value(
                samples,
                "taskgate_tasks_finished_total",
                workflow="stubborn",
                status="cancelled",
            )
            == 2
        )
        assert (
            _value(
                samples,
                "taskgate_task_duration_seconds_count",
                workflow="probe",
                status="completed",
            )
            == 3
        )
        # The stubborn tasks ran about a second each (the cancel grace period).
        stubborn_seconds = _value(
            samples, "taskgate_task_duration_seconds_sum", workflow="stubborn", status="cancelled"
        )
        assert 2 * 0.9 < stubborn_seconds < 2 * 10
        assert _value(samples, "taskgate_tasks", status="running") == 0
        assert _value(samples, "taskgate_tasks", status="queued") == 0
        assert _value(samples, "taskgate_queue_depth") == 0


def test_readyz_and_healthz(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}
        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert health.headers["x-request-id"]
