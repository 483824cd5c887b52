"""Credits over HTTP, end to end: the estimate reserved on submit (402 with nothing
written when short), the price charged on completion capped at the reservation and
the rest refunded, full refunds for failed, cancelled and lost tasks, one
reservation per task whatever the retries or concurrent duplicate submissions, and
``GET /v1/usage`` exact to the millicredit."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    TERMINAL,
    assert_error,
    get_usage,
    ledger_of_task,
    module_server,
    quick_account,
    sql,
    submit,
    task_ids,
    wait_status,
)
from tests.acceptance.worker_support import alive, descendants
from tests.databases import Backend
from tests.helpers import ServerProcess, run_cli, start_server, wait_until

pytestmark = pytest.mark.acceptance

LEASE = 2.0  # TASKGATE_LEASE_SECONDS of the test processes
USAGE_FIELDS = {
    "object",
    "account_id",
    "balance",
    "reserved",
    "charged_period",
    "charged_total",
    "period_start",
    "running",
    "queued",
    "concurrency_limit",
    "rate_limits",
    "currency",
}


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    """A server without workers: submitted tasks stay queued, holding their reservation."""
    yield from module_server(tmp_path_factory, backend, "--no-workers")


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    """A server with two worker slots."""
    yield from module_server(tmp_path_factory, backend)


def _period_start(moment: datetime) -> str:
    return moment.strftime("%Y-%m-01T00:00:00.000000Z")


def _assert_usage(
    http: httpx.Client,
    account_id: str,
    *,
    balance: str,
    reserved: str,
    charged: str = "0",
    running: int = 0,
    queued: int = 0,
    concurrency: int = 4,
) -> dict[str, Any]:
    """``GET /v1/usage`` is exactly this (charges all fall in the current month)."""
    before = datetime.now(UTC)
    body = get_usage(http)
    after = datetime.now(UTC)
    assert set(body) == USAGE_FIELDS, body
    assert isinstance(body["rate_limits"], list), body  # their shape is tested elsewhere
    assert body["period_start"] in {_period_start(before), _period_start(after)}, body
    expected = {
        "object": "usage",
        "account_id": account_id,
        "balance": balance,
        "reserved": reserved,
        "charged_period": charged,
        "charged_total": charged,
        "running": running,
        "queued": queued,
        "concurrency_limit": concurrency,
        "currency": "credits",
    }
    assert {key: body[key] for key in expected} == expected, body
    return body


def _billing(
    estimated: str, reserved: str, charged: str | None = None, refunded: str | None = None
) -> dict[str, Any]:
    return {
        "estimated_credits": estimated,
        "reserved_credits": reserved,
        "charged_credits": charged,
        "refunded_credits": refunded,
        "currency": "credits",
    }


def _counts(data_dir: Path, account_id: str) -> dict[str, int]:
    """Rows of tasks, events and ledger: in all, and the account's."""
    found: dict[str, int] = {}
    for table in ("tasks", "events", "ledger"):
        found[table] = sql(data_dir, f"SELECT count(*) FROM {table}")[0][0]
        found[f"{table} of the account"] = sql(
            data_dir, f"SELECT count(*) FROM {table} WHERE account_id = ?", account_id
        )[0][0]
    return found


def _assert_closed(task: dict[str, Any]) -> None:
    """A terminal task's reservation is split exactly: reserved = charged + refunded."""
    billing = task["billing"]
    reserved, charged, refunded = (
        Decimal(billing[key]) for key in ("reserved_credits", "charged_credits", "refunded_credits")
    )
    assert reserved == charged + refunded, task


# -- reserve on submit ---------------------------------------------------------


def test_submit_reserves_exactly_the_estimate(idle: ServerProcess) -> None:
    """The estimate leaves the balance for the reservation, shown on the task; a task
    estimated at 0 reserves nothing and writes no ledger entry."""
    account = quick_account(idle.data_dir, "reserve", credits="10")
    with idle.client(account.key) as http:
        _assert_usage(http, account.id, balance="10", reserved="0")

        task = submit(http, "metered", input={"units": 3, "estimate_units": 4.5})
        assert task["status"] == "queued"
        assert task["billing"] == _billing("2.25", "2.25")
        assert task["usage"] == {"lines": [], "credits": "0"}
        _assert_usage(http, account.id, balance="7.75", reserved="2.25", queued=1)
        read = http.get(f"/v1/tasks/{task['id']}").json()
        assert (read["billing"], read["usage"]) == (task["billing"], task["usage"])
        assert ledger_of_task(idle.data_dir, task["id"]) == [("reserve", 2250)]

        free = submit(http, "metered", input={"units": 0})
        free_wait = submit(http, "wait", input={"seconds": 1})
        for zero in (free, free_wait):
            assert zero["billing"] == _billing("0", "0")
            assert ledger_of_task(idle.data_dir, zero["id"]) == []
        _assert_usage(http, account.id, balance="7.75", reserved="2.25", queued=3)


def test_a_fractional_estimate_is_rounded_up_to_the_millicredit(idle: ServerProcess) -> None:
    """0.5 × 0.0015 = 0.00075 credits reserves 0.001: never less than the estimate."""
    account = quick_account(idle.data_dir, "round", credits="1")
    with idle.client(account.key) as http:
        task = submit(http, "metered", input={"units": 0.0015})
        assert task["billing"] == _billing("0.001", "0.001")
        _assert_usage(http, account.id, balance="0.999", reserved="0.001", queued=1)


# -- 402 -----------------------------------------------------------------------


def test_a_short_balance_is_a_402_that_writes_nothing(idle: ServerProcess) -> None:
    """1 credit cannot cover a task estimated at 2: 402 with the amounts, and no task,
    event or ledger row, in the API or in the database file."""
    account = quick_account(idle.data_dir, "short", credits="1")
    with idle.client(account.key) as http:
        listed = task_ids(http)
        usage = _assert_usage(http, account.id, balance="1", reserved="0")
        rows = _counts(idle.data_dir, account.id)

        refused = http.post("/v1/tasks", json={"workflow": "metered", "input": {"units": 4}})
        error = assert_error(refused, 402, "insufficient_credits")
        assert error["details"] == {"needed": "2", "available": "1"}, error
        by_route = http.post("/v1/workflows/metered/tasks", json={"input": {"units": 2.002}})
        error = assert_error(by_route, 402, "insufficient_credits")
        assert error["details"] == {"needed": "1.001", "available": "1"}, error

        assert task_ids(http) == listed == []
        assert get_usage(http) == usage
        assert _counts(idle.data_dir, account.id) == rows

        # Exactly the balance is enough.
        task = submit(http, "metered", input={"units": 2})
        assert task["billing"] == _billing("1", "1")
        _assert_usage(http, account.id, balance="0", reserved="1", queued=1)


def test_a_402_leaves_the_idempotency_key_unused(idle: ServerProcess) -> None:
    """After a 402 the key made nothing; once credits are granted, the same request
    with the same key creates the task (201), and a repeat returns it (200)."""
    account = quick_account(idle.data_dir, "idem402", credits="1")
    headers = {"Idempotency-Key": "order-402"}
    body = {"workflow": "metered", "input": {"units": 4}}
    with idle.client(account.key) as http:
        rows = _counts(idle.data_dir, account.id)
        refused = http.post("/v1/tasks", json=body, headers=headers)
        error = assert_error(refused, 402, "insufficient_credits")
        assert error["details"] == {"needed": "2", "available": "1"}, error
        assert_error(
            http.post("/v1/tasks/query", json={"out_task_id": "order-402"}), 404, "task_not_found"
        )
        assert _counts(idle.data_dir, account.id) == rows

        granted = run_cli(idle.data_dir, "credits", "grant", account.id, "1")
        assert granted.stdout.strip() == f"Granted 1 credits to {account.name}; available: 2."

        created = http.post("/v1/tasks", json=body, headers=headers)
        assert created.status_code == 201, created.text
        task = created.json()
        assert (task["out_task_id"], task["billing"]) == ("order-402", _billing("2", "2"))
        again = http.post("/v1/tasks", json=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == task["id"]
        _assert_usage(http, account.id, balance="0", reserved="2", queued=1)
        assert ledger_of_task(idle.data_dir, task["id"]) == [("reserve", 2000)]


# -- refunds of tasks that never ran --------------------------------------------


def test_a_task_cancelled_while_queued_is_refunded_in_full(idle: ServerProcess) -> None:
    account = quick_account(idle.data_dir, "cxlq", credits="10")
    with idle.client(account.key) as http:
        task = submit(http, "metered", input={"units": 3})
        _assert_usage(http, account.id, balance="8.5", reserved="1.5", queued=1)
        cancelled = http.post(f"/v1/tasks/{task['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled"
        assert body["billing"] == _billing("1.5", "1.5", "0", "1.5")
        assert body["usage"] == {"lines": [], "credits": "0"}
        _assert_usage(http, account.id, balance="10", reserved="0")
        assert ledger_of_task(idle.data_dir, task["id"]) == [("reserve", 1500), ("refund", 1500)]


# -- concurrent duplicates ------------------------------------------------------


def test_fifty_concurrent_submissions_with_one_key_reserve_once(idle: ServerProcess) -> None:
    """50 threads send the same keyed submission at once: one 201 and 49 200s with
    one task id, one reservation, one task row, one ``task.created`` event."""
    account = quick_account(idle.data_dir, "race", credits="10")
    count = 50
    start = threading.Barrier(count)
    body = {"workflow": "metered", "input": {"units": 2}}

    def send(_: int) -> httpx.Response:
        with idle.client(account.key) as http:
            start.wait(timeout=30)
            return http.post("/v1/tasks", json=body, headers={"Idempotency-Key": "race-1"})

    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(send, range(count)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (count - 1) + [201], [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1, ids
    (task_id,) = ids
    assert [r.json()["billing"] for r in responses] == [_billing("1", "1")] * count
    with idle.client(account.key) as http:
        _assert_usage(http, account.id, balance="9", reserved="1", queued=1)
        assert task_ids(http) == [task_id]
    assert ledger_of_task(idle.data_dir, task_id) == [("reserve", 1000)]
    assert sql(
        idle.data_dir,
        "SELECT kind, amount FROM ledger WHERE account_id = ? ORDER BY id",
        account.id,
    ) == [("grant", 10_000), ("reserve", 1000)]
    assert sql(idle.data_dir, "SELECT type FROM events WHERE task_id = ?", task_id) == [
        ("task.created",)
    ]


# -- charges on completion --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "billing", "usage", "balance", "charged", "entries"),
    [
        pytest.param(
            {"units": 3, "estimate_units": 4},
            _billing("2", "2", "1.5", "0.5"),
            {"units": 3.0, "lines": [("units", 3.0, "1.5")], "credits": "1.5"},
            "8.5",
            "1.5",
            [("reserve", 2000), ("settle", 1500), ("refund", 500)],
            id="under-estimate",
        ),
        pytest.param(
            {"units": 10, "estimate_units": 2},
            _billing("1", "1", "1", "0"),
            {"units": 10.0, "lines": [("units", 10.0, "5")], "credits": "5"},
            "9",
            "1",
            [("reserve", 1000), ("settle", 1000)],
            id="over-estimate-capped",
        ),
        pytest.param(
            {"units": 2.5},
            _billing("1.25", "1.25", "1.25", "0"),
            {"units": 2.5, "lines": [("units", 2.5, "1.25")], "credits": "1.25"},
            "8.75",
            "1.25",
            [("reserve", 1250), ("settle", 1250)],
            id="exact",
        ),
        pytest.param(
            {"units": 0.0015},
            _billing("0.001", "0.001", "0.001", "0"),
            {"units": 0.0015, "lines": [("units", 0.0015, "0.001")], "credits": "0.001"},
            "9.999",
            "0.001",
            [("reserve", 1), ("settle", 1)],
            id="millicredit-rounding",
        ),
    ],
)
def test_completion_charges_the_price_capped_at_the_reservation(
    busy: ServerProcess,
    given: dict[str, float],
    billing: dict[str, Any],
    usage: dict[str, Any],
    balance: str,
    charged: str,
    entries: list[tuple[str, int]],
) -> None:
    account = quick_account(busy.data_dir, "charge", credits="10")
    with busy.client(account.key) as http:
        task_id = submit(http, "metered", input=given)["id"]
        task = wait_status(http, task_id, TERMINAL)
        assert task["status"] == "completed", task
        assert task["billing"] == billing
        lines = [
            {"meter": meter, "quantity": quantity, "unit": "unit", "credits": credits}
            for meter, quantity, credits in usage["lines"]
        ]
        assert task["usage"] == {**usage, "lines": lines}
        _assert_closed(task)
        _assert_usage(http, account.id, balance=balance, reserved="0", charged=charged)
    assert ledger_of_task(busy.data_dir, task_id) == entries


# -- full refunds -------------------------------------------------------------------


def test_a_failed_task_is_refunded_in_full(busy: ServerProcess) -> None:
    """It reported usage before failing, and pays nothing for it."""
    account = quick_account(busy.data_dir, "failed", credits="10")
    with busy.client(account.key) as http:
        task_id = submit(http, "metered", input={"units": 3, "fail": True})["id"]
        task = wait_status(http, task_id, TERMINAL)
        assert task["status"] == "failed", task
        assert task["error"]["code"] == "metered_failed"
        assert task["billing"] == _billing("1.5", "1.5", "0", "1.5")
        assert task["usage"] == {"units": 3.0, "lines": [], "credits": "0"}
        _assert_usage(http, account.id, balance="10", reserved="0")
    assert ledger_of_task(busy.data_dir, task_id) == [("reserve", 1500), ("refund", 1500)]


def test_a_task_cancelled_while_running_is_refunded_in_full(busy: ServerProcess) -> None:
    account = quick_account(busy.data_dir, "cxlr", credits="10")
    with busy.client(account.key) as http:
        task_id = submit(http, "metered", input={"units": 2, "seconds": 30})["id"]
        running = wait_status(http, task_id, {"running"})
        assert running["billing"] == _billing("1", "1")
        _assert_usage(http, account.id, balance="9", reserved="1", running=1)

        asked = http.post(f"/v1/tasks/{task_id}/cancel")
        assert asked.status_code == 202, asked.text
        task = wait_status(http, task_id, TERMINAL)
        assert task["status"] == "cancelled", task
        assert task["billing"] == _billing("1", "1", "0", "1")
        assert task["usage"] == {"units": 2.0, "lines": [], "credits": "0"}
        _assert_usage(http, account.id, balance="10", reserved="0")
    assert ledger_of_task(busy.data_dir, task_id) == [("reserve", 1000), ("refund", 1000)]


def test_a_retried_task_keeps_one_reservation_and_is_charged_once(busy: ServerProcess) -> None:
    """``wait`` fails retryably on its first attempt, then completes: charged its
    price once, from the one reservation made at submit."""
    account = quick_account(busy.data_dir, "retry", credits="10")
    with busy.client(account.key) as http:
        task_id = submit(http, "wait", input={"credits": "1", "fail_attempts": 1})["id"]
        task = wait_status(http, task_id, TERMINAL)
        assert (task["status"], task["attempts"], task["error"]) == ("completed", 2, None), task
        assert task["billing"] == _billing("1", "1", "1", "0")
        assert task["usage"] == {
            "wait_seconds": 0.0,
            "lines": [{"meter": "run", "quantity": 1, "unit": "run", "credits": "1"}],
            "credits": "1",
        }
        _assert_usage(http, account.id, balance="9", reserved="0", charged="1")
    assert ledger_of_task(busy.data_dir, task_id) == [("reserve", 1000), ("settle", 1000)]
    types = [
        row[0]
        for row in sql(
            busy.data_dir, "SELECT type FROM events WHERE task_id = ? ORDER BY seq", task_id
        )
    ]
    assert [t for t in types if t != "task.progress"] == [
        "task.created",
        "task.started",
        "task.requeued",
        "task.started",
        "task.completed",
    ]


def test_charges_add_up_across_tasks(busy: ServerProcess) -> None:
    """Several tasks of one account, each ending its own way: the balance and the
    charges of the period are the exact sums."""
    account = quick_account(busy.data_dir, "sums", credits="20")
    inputs = [
        {"units": 3, "estimate_units": 4},  # charged 1.5
        {"units": 10, "estimate_units": 2},  # charged 1
        {"units": 0.25},  # charged 0.125
        {"units": 6, "fail": True},  # charged 0
    ]
    with busy.client(account.key) as http:
        ids = [submit(http, "metered", input=given)["id"] for given in inputs]
        tasks = [wait_status(http, task_id, TERMINAL) for task_id in ids]
        assert [t["status"] for t in tasks] == ["completed"] * 3 + ["failed"]
        assert [t["billing"]["charged_credits"] for t in tasks] == ["1.5", "1", "0.125", "0"]
        for task in tasks:
            _assert_closed(task)
        _assert_usage(http, account.id, balance="17.375", reserved="0", charged="2.625")


# -- a crash ------------------------------------------------------------------------


CRASH_SECONDS = 4  # each attempt's run; the first one is killed


def test_tasks_of_a_killed_server_are_settled_once_after_recovery(data_dir: Path) -> None:
    """SIGKILL of serve and every process below it while three metered tasks run;
    after a restart their leases run out, they are retried (worker_lost) and end,
    each reservation closed exactly once, and ``taskgate doctor`` is clean."""
    env = {"TASKGATE_WORKERS": "3"}
    server = start_server(data_dir, env=env)
    account = quick_account(data_dir, "crash", credits="10", concurrency=3)
    inputs = {
        "under": {"units": 3, "estimate_units": 4, "seconds": CRASH_SECONDS},
        "over": {"units": 10, "estimate_units": 2, "seconds": CRASH_SECONDS},
        "fails": {"units": 2, "seconds": CRASH_SECONDS, "fail": True},
    }
    try:
        with server.client(account.key) as http:
            ids = {
                name: submit(http, "metered", input=given)["id"] for name, given in inputs.items()
            }
            for task_id in ids.values():
                wait_status(http, task_id, {"running"}, timeout=10)
            _assert_usage(http, account.id, balance="6", reserved="4", running=3, concurrency=3)
        tree = descendants(server.process.pid)
        for pid in [server.process.pid, *tree]:
            os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        wait_until(lambda: not [p for p in tree if alive(p)], timeout=5, message="the old tree")
    finally:
        server.stop()
    rows = sql(
        data_dir,
        "SELECT status, charged_credits, refunded_credits FROM tasks WHERE account_id = ?",
        account.id,
    )
    assert rows == [("running", None, None)] * 3, "a task ended before the kill"

    restarted = start_server(data_dir, env=env)
    try:
        with restarted.client(account.key) as http:
            ended = {
                name: wait_status(http, task_id, TERMINAL, timeout=LEASE + 2 * CRASH_SECONDS + 10)
                for name, task_id in ids.items()
            }
            assert {name: (t["status"], t["attempts"]) for name, t in ended.items()} == {
                "under": ("completed", 2),
                "over": ("completed", 2),
                "fails": ("failed", 2),
            }
            assert ended["fails"]["error"]["code"] == "metered_failed"
            assert {name: t["billing"] for name, t in ended.items()} == {
                "under": _billing("2", "2", "1.5", "0.5"),
                "over": _billing("1", "1", "1", "0"),
                "fails": _billing("1", "1", "0", "1"),
            }
            for task in ended.values():
                _assert_closed(task)
            _assert_usage(
                http, account.id, balance="7.5", reserved="0", charged="2.5", concurrency=3
            )
        assert {name: ledger_of_task(data_dir, task_id) for name, task_id in ids.items()} == {
            "under": [("reserve", 2000), ("settle", 1500), ("refund", 500)],
            "over": [("reserve", 1000), ("settle", 1000)],
            "fails": [("reserve", 1000), ("refund", 1000)],
        }
        for task_id in ids.values():
            types = sql(data_dir, "SELECT type FROM events WHERE task_id = ? ORDER BY seq", task_id)
            assert [t for (t,) in types if t != "task.progress"][:3] == [
                "task.created",
                "task.started",
                "task.requeued",
            ]
        doctor = run_cli(data_dir, "doctor", check=False)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert doctor.stdout.strip() == "Credits are consistent: every account and task checks out."
    finally:
        restarted.stop()
