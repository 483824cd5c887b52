"""Retries and failures, end to end: real ``taskgate serve``, real executor processes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.worker_support import event_types, submit, wait_status
from tests.databases import Backend
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    with backend.bound(tmp_path_factory.mktemp("retries") / "data") as data_dir:
        proc = start_server(data_dir)
        try:
            yield proc
        finally:
            proc.stop()


@pytest.fixture
def http(served: ServerProcess) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def _lifecycle(served: ServerProcess, task_id: str) -> list[str]:
    return [t for t in event_types(served.data_dir, task_id) if t != "task.progress"]


def test_retryable_failures_are_retried_until_success(
    served: ServerProcess, http: httpx.Client
) -> None:
    task_id = submit(http, "wait", {"fail_attempts": 2})
    task = wait_status(http, task_id)
    assert task["status"] == "completed", task
    assert (task["attempts"], task["max_attempts"]) == (3, 3)
    assert task["output"] == [{"waited_seconds": 0.0, "steps": 1}]
    assert task["error"] is None  # the failed attempts' error does not stick
    assert _lifecycle(served, task_id) == [
        "task.created",
        "task.started",
        "task.requeued",
        "task.started",
        "task.requeued",
        "task.started",
        "task.completed",
    ]


def test_a_retryable_failure_fails_once_attempts_run_out(
    served: ServerProcess, http: httpx.Client
) -> None:
    task_id = submit(http, "wait", {"fail": True, "retryable": True})
    task = wait_status(http, task_id)
    assert task["status"] == "failed", task
    assert task["attempts"] == task["max_attempts"] == 3
    assert task["error"]["code"] == "wait_failed"
    assert _lifecycle(served, task_id).count("task.started") == 3
    assert _lifecycle(served, task_id)[-1] == "task.failed"


def test_a_non_retryable_failure_is_not_retried(served: ServerProcess, http: httpx.Client) -> None:
    task_id = submit(http, "wait", {"fail": True})
    task = wait_status(http, task_id)
    assert (task["status"], task["attempts"], task["error"]["code"]) == ("failed", 1, "wait_failed")


def test_an_unhandled_exception_fails_without_retry(
    served: ServerProcess, http: httpx.Client
) -> None:
    task_id = submit(http, "boom")
    task = wait_status(http, task_id)
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "handler_error"
    assert "kaboom" in task["error"]["message"]
    assert (task["attempts"], task["max_attempts"]) == (1, 3)
    assert _lifecycle(served, task_id) == ["task.created", "task.started", "task.failed"]


def test_a_handler_past_its_timeout_is_stopped(served: ServerProcess, http: httpx.Client) -> None:
    task_id = submit(http, "slow", {"seconds": 30})
    task = wait_status(http, task_id, timeout=10)
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "timeout"
    assert (task["attempts"], task["max_attempts"]) == (1, 3)
    assert _lifecycle(served, task_id) == ["task.created", "task.started", "task.failed"]
    # The killed executor was replaced: both slots run tasks again.
    probes = [submit(http, "probe", {"seconds": 0.3}) for _ in range(2)]
    for probe in probes:
        assert wait_status(http, probe, timeout=15)["status"] == "completed"
