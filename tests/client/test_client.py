"""``Client`` against a real server: every method, and every error type."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskgate.client import (
    APIConnectionError,
    AuthenticationError,
    Client,
    ConflictError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    TaskCancelledError,
    TaskFailedError,
    TaskObject,
)
from tests.acceptance.apitools import TASK_ID, Account, quick_account
from tests.client.transports import FaultyTransport
from tests.databases import Backend
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.acceptance
UNKNOWN_TASK = "task_01J0000000000000000000000Z"


def unsigned(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items without their download links (signed afresh on every read)."""
    return [
        {key: value for key, value in item.items() if key not in ("url", "url_expires_at")}
        for item in output
    ]


def same(task: TaskObject) -> dict[str, Any]:
    """A task without its links (the events link carries a token signed per read)."""
    return {**task.model_dump(exclude={"links"}), "output": unsigned(task.output)}


def test_workflows(client: Client) -> None:
    names = [workflow.name for workflow in client.workflows.list()]
    assert names == [
        "boom",
        "copy-files",
        "ecommerce-video",
        "metered",
        "music",
        "music-video",
        "probe",
        "slideshow",
        "slow",
        "spin",
        "stubborn",
        "wait",
    ]
    wait = client.workflows.get("wait")
    assert (wait.name, wait.object, wait.max_attempts) == ("wait", "workflow", 3)
    assert wait.input_schema["properties"]["seconds"]["type"] == "number"


def test_create_get_query_and_usage(client: Client, account: Account) -> None:
    task = client.tasks.create(
        "metered", {"units": 2}, metadata={"run": "a"}, priority=3, idempotency_key="k-1"
    )
    assert TASK_ID.match(task.id)
    assert (task.workflow, task.metadata, task.priority, task.out_task_id) == (
        "metered",
        {"run": "a"},
        3,
        "k-1",
    )
    assert task.billing.reserved_credits == "1"
    done = client.tasks.wait(task.id, timeout=20)
    assert (done.id, done.status, done.billing.charged_credits) == (task.id, "completed", "1")
    assert same(client.tasks.get(task.id)) == same(done)
    assert same(client.tasks.query(task_id=task.id)) == same(done)
    assert same(client.tasks.query(out_task_id="k-1")) == same(done)
    usage = client.usage.get()
    assert (usage.account_id, usage.balance, usage.charged_total) == (account.id, "99", "1")
    assert (usage.running, usage.queued, usage.concurrency_limit) == (0, 0, 4)


def test_list_pages_through_every_task(client: Client) -> None:
    made = [client.tasks.create("wait", {"seconds": 0}, metadata={"n": str(n)}) for n in range(5)]
    for task in made:
        client.tasks.wait(task.id, timeout=20)
    other = client.tasks.create("probe", {})
    client.tasks.wait(other.id, timeout=20)
    listed = [task.id for task in client.tasks.list(limit=2)]
    assert listed == [other.id, *reversed([task.id for task in made])]
    waits = [task.id for task in client.tasks.list(workflow="wait", status="completed", limit=2)]
    assert waits == list(reversed([task.id for task in made]))
    assert [task.id for task in client.tasks.list(status=["queued", "running"])] == []
    assert [task.id for task in client.tasks.list(metadata={"n": "3"})] == [made[3].id]


def test_cancel_and_wait_on_each_end(client: Client) -> None:
    long = client.tasks.create("wait", {"seconds": 30})
    cancelled = client.tasks.cancel(long.id)
    assert cancelled.id == long.id
    with pytest.raises(TaskCancelledError) as stopped:
        client.tasks.wait(long.id, timeout=20)
    assert (stopped.value.task.id, stopped.value.task.status) == (long.id, "cancelled")

    failing = client.tasks.create("wait", {"fail": True})
    with pytest.raises(TaskFailedError) as failed:
        client.tasks.wait(failing.id, timeout=20)
    assert failed.value.task.id == failing.id
    assert failed.value.error is not None
    assert (failed.value.error.code, failed.value.error.message) == (
        "wait_failed",
        "Failed as asked.",
    )

    # A task that has ended cannot be cancelled: a ConflictError, not an idempotency one.
    with pytest.raises(ConflictError) as conflict:
        client.tasks.cancel(failing.id)
    assert not isinstance(conflict.value, IdempotencyConflictError)
    assert (conflict.value.status, conflict.value.code) == (409, "task_not_cancellable")


def test_run_gives_a_handle_at_once(client: Client) -> None:
    run = client.tasks.run("wait", {"seconds": 0.1, "output_bytes": 10}, timeout=20)
    assert TASK_ID.match(run.task_id)
    assert run.task.id == run.task_id
    done = run.wait()
    assert (done.id, done.status) == (run.task_id, "completed")
    output = run.result()
    assert unsigned(output) == unsigned(done.output)
    assert output[0] == {"waited_seconds": 0.1, "steps": 1}
    assert (output[1]["name"], output[1]["bytes"]) == ("wait.bin", 10)
    assert output[1]["url"].startswith(client.base_url)
    assert same(run.refresh()) == same(done)


def test_authentication_error(sdk_server: ServerProcess) -> None:
    bad = Client(sdk_server.base_url, "tg_live_" + "x" * 38)
    with bad, pytest.raises(AuthenticationError) as error:
        bad.tasks.get(UNKNOWN_TASK)
    assert (error.value.status, error.value.code) == (401, "invalid_api_key")
    assert error.value.request_id is not None
    assert error.value.request_id.startswith("req_")


def test_not_found_errors(client: Client) -> None:
    with pytest.raises(NotFoundError) as task:
        client.tasks.get(UNKNOWN_TASK)
    assert (task.value.status, task.value.code) == (404, "task_not_found")
    with pytest.raises(NotFoundError) as workflow:
        client.workflows.get("nope")
    assert (workflow.value.code, workflow.value.param) == ("workflow_not_found", "workflow")
    with pytest.raises(NotFoundError) as created:
        client.tasks.create("nope", {})
    assert created.value.code == "workflow_not_found"


def test_insufficient_credits(sdk_server: ServerProcess) -> None:
    poor = quick_account(sdk_server.data_dir, "poor", credits="1")
    with Client(sdk_server.base_url, poor.key) as client:
        with pytest.raises(InsufficientCreditsError) as error:
            client.tasks.create("metered", {"units": 10})
        assert list(client.tasks.list()) == []
    assert (error.value.status, error.value.code) == (402, "insufficient_credits")
    assert (error.value.needed, error.value.available) == ("5", "1")


def test_invalid_requests(client: Client) -> None:
    with pytest.raises(InvalidRequestError) as content:
        client.tasks.create("wait", {"seconds": -1})
    assert (content.value.status, content.value.code, content.value.param) == (
        422,
        "invalid_param",
        "input.seconds",
    )
    with pytest.raises(InvalidRequestError) as both:
        client.tasks.query(task_id=UNKNOWN_TASK, out_task_id="x")
    assert (both.value.status, both.value.code) == (400, "invalid_param")


def test_idempotency(client: Client) -> None:
    key = f"idem-{uuid.uuid4()}"
    first = client.tasks.create("wait", {"seconds": 0}, idempotency_key=key)
    again = client.tasks.create("wait", {"seconds": 0}, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(IdempotencyConflictError) as error:
        client.tasks.create("wait", {"seconds": 1}, idempotency_key=key)
    assert (error.value.status, error.value.code) == (409, "idempotency_conflict")


def _posts(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/v1/tasks"


@pytest.mark.parametrize("fault", ["lose", "503"])
def test_create_is_retried_with_the_same_key(
    sdk_server: ServerProcess, account: Account, fault: str
) -> None:
    """The first answer is lost after the server made the task (or a 503 comes
    instead): the retry carries the same key, and there is one task."""
    transport = FaultyTransport(lambda n, _: fault if n == 0 else None, _posts)
    with Client(sdk_server.base_url, account.key, transport=transport) as client:
        task = client.tasks.create("wait", {"seconds": 0}, metadata={"fault": fault})
        assert [t.id for t in client.tasks.list(metadata={"fault": fault})] == [task.id]
    keys = [r.headers["idempotency-key"] for r in transport.sent if _posts(r)]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert uuid.UUID(keys[0]).version == 4


def test_create_gives_up_after_max_retries(sdk_server: ServerProcess, account: Account) -> None:
    transport = FaultyTransport(lambda n, _: "lose", _posts)
    with Client(sdk_server.base_url, account.key, transport=transport, max_retries=2) as client:
        with pytest.raises(APIConnectionError):
            client.tasks.create("wait", {"seconds": 0}, metadata={"fault": "always"})
        made = list(client.tasks.list(metadata={"fault": "always"}))
    assert len(made) == 1  # three attempts, one task
    assert transport.matched == 3


@pytest.fixture(scope="module")
def limited_server(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[ServerProcess]:
    with backend.bound(tmp_path_factory.mktemp("limited") / "data") as data_dir:
        proc = start_server(data_dir, "--no-workers", env={"TASKGATE_RATE_LIMIT_READS": "3/second"})
        try:
            yield proc
        finally:
            proc.stop()


def test_rate_limit_error_and_read_retries(limited_server: ServerProcess) -> None:
    assert limited_server.api_key is not None
    with Client(limited_server.base_url, limited_server.api_key, max_retries=0) as strict:
        task = strict.tasks.create("wait", {})
        for _ in range(3):
            assert strict.tasks.get(task.id).id == task.id
        with pytest.raises(RateLimitError) as error:
            strict.tasks.get(task.id)
    assert (error.value.status, error.value.code, error.value.retry_after) == (
        429,
        "rate_limited",
        1.0,
    )
    # With retries, the read waits out Retry-After and succeeds.
    with Client(limited_server.base_url, limited_server.api_key) as patient:
        for _ in range(4):
            assert patient.tasks.get(task.id).id == task.id
