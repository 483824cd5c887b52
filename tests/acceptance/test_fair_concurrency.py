"""Per-account fair concurrency: no account runs more handlers at once than its limit,
and a deep backlog of one account does not hold back another account's task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from taskgate.composition import build
from taskgate.payloads import WorkflowSubmit
from taskgate.settings import Settings
from taskgate.store.tables import tasks
from tests.acceptance.worker_support import database, running_ids, submit, wait_status
from tests.helpers import ServerProcess, postgres_url, run_cli, start_server, wait_until

pytestmark = pytest.mark.acceptance

#: Rate limits per key would throttle the polling and submitting these tests do.
UNLIMITED = {"TASKGATE_RATE_LIMIT_READS": "unlimited", "TASKGATE_RATE_LIMIT_WRITES": "unlimited"}

#: Account name, concurrency limit, tasks submitted.
ACCOUNTS = (("one", 1, 12), ("two", 2, 16), ("three", 3, 18))
PROBE_SECONDS = 0.3

FLOOD_TASKS = 10_000
FLOOD_SECONDS = 1.0  # D: how long each flood task runs
DISPATCH_ALLOWANCE = 0.5


@pytest.fixture
def eight_slots(data_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(data_dir, env={"TASKGATE_WORKERS": "8", **UNLIMITED})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def four_slots(data_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(data_dir, env={"TASKGATE_WORKERS": "4", **UNLIMITED})
    try:
        yield proc
    finally:
        proc.stop()


def _account_key(data_dir: Path, name: str, concurrency: int) -> str:
    run_cli(
        data_dir,
        "accounts",
        "create",
        name,
        "--credits",
        "100",
        "--concurrency",
        str(concurrency),
    )
    key = run_cli(data_dir, "keys", "create", name).stdout.strip().splitlines()[-1].strip()
    assert key.startswith("tg_live_"), key
    return key


def _account_keys(data_dir: Path, *accounts: tuple[str, int]) -> list[str]:
    """Create accounts (name, concurrency) and a key for each, the CLI runs side by side
    (each one spends most of its second importing)."""
    with ThreadPoolExecutor(len(accounts)) as pool:
        return list(pool.map(lambda account: _account_key(data_dir, *account), accounts))


def _queued(data_dir: Path) -> int:
    with database(data_dir) as db:
        return int(
            db.read_sync(
                lambda conn: conn.execute(
                    select(func.count()).select_from(tasks).where(tasks.c.status == "queued")
                ).scalar_one()
            )
        )


def _statuses(http: httpx.Client) -> dict[str, str]:
    """Every task of the client's account (at most 100) and its status."""
    response = http.get("/v1/tasks", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {t["id"]: t["status"] for t in response.json()["data"]}


def _intervals(record_dir: Path) -> dict[str, tuple[float, float]]:
    """The probe handlers' recorded (entry, exit) wall-clock times, by record file name."""
    found: dict[str, tuple[float, float]] = {}
    for path in record_dir.iterdir():
        entered, left, _pid = path.read_text().split()
        found[path.name] = (float(entered), float(left))
    return found


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at any one instant (an exit before an entry at the same
    instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_, most = 0, 0
    for _, delta in events:
        open_ += delta
        most = max(most, open_)
    return most


def _enqueue(data_dir: Path, account: str, count: int, input_: dict[str, float]) -> None:
    """Queue ``count`` probe tasks directly through the task service (as bench/drain.py
    does), a thousand per transaction: far faster than as many HTTP requests."""
    services = build(
        Settings(
            data_dir=data_dir,
            database_url=postgres_url(data_dir),
            secret_key="enqueue",  # signs nothing here
            workflows=["taskgate_testflows"],
        )
    )
    try:
        account_id = services.accounts.find_account(account).id
        request = WorkflowSubmit(input=input_)

        async def submit_all() -> None:
            left = count
            while left > 0:
                n = min(1000, left)
                await services.tasks.submit_many(account_id, "probe", [request] * n)
                left -= n

        asyncio.run(submit_all())
    finally:
        services.close()


def test_concurrency_limits_are_never_exceeded(eight_slots: ServerProcess, tmp_path: Path) -> None:
    """With more slots than all limits together, each account runs exactly as many
    handlers at once as its limit, never more; and every task runs exactly once."""
    server = eight_slots
    clients: dict[str, httpx.Client] = {}
    submitted: dict[str, list[str]] = {}
    record_dirs: dict[str, Path] = {}
    try:
        keys = _account_keys(server.data_dir, *((name, limit) for name, limit, _ in ACCOUNTS))
        for (name, _, _), key in zip(ACCOUNTS, keys, strict=True):
            clients[name] = server.client(key)
            record_dirs[name] = tmp_path / "records" / name
            record_dirs[name].mkdir(parents=True)
        for name, _, count in ACCOUNTS:
            probe_input = {"seconds": PROBE_SECONDS, "record_dir": str(record_dirs[name])}
            submitted[name] = [submit(clients[name], "probe", probe_input) for _ in range(count)]

        def all_completed() -> bool:
            for name, http in clients.items():
                statuses = _statuses(http)
                assert sorted(statuses) == sorted(submitted[name])
                failed = [s for s in statuses.values() if s in ("failed", "cancelled")]
                assert not failed, statuses
                if any(s != "completed" for s in statuses.values()):
                    return False
            return True

        wait_until(all_completed, timeout=30, interval=0.05, message="every task completed")
    finally:
        for http in clients.values():
            http.close()

    overlaps: dict[str, int] = {}
    for name, _, _ in ACCOUNTS:
        intervals = _intervals(record_dirs[name])
        # One record per task, from its first attempt: each task ran exactly once.
        assert sorted(intervals) == sorted(f"{task_id}-1" for task_id in submitted[name])
        overlaps[name] = max_overlap(list(intervals.values()))
    assert overlaps == {name: limit for name, limit, _ in ACCOUNTS}


def test_a_deep_backlog_does_not_delay_another_account(four_slots: ServerProcess) -> None:
    """With every slot busy on an account's 10,000-task backlog, another account's
    task starts as soon as one slot frees up: accounts take turns, not first come
    first served."""
    server = four_slots
    data_dir = server.data_dir
    flood_key, other_key = _account_keys(data_dir, ("flood", 4), ("other", 4))

    _enqueue(data_dir, "flood", FLOOD_TASKS, {"seconds": FLOOD_SECONDS})

    with server.client(flood_key) as flood, server.client(other_key) as other:
        wait_until(
            lambda: len(running_ids(flood)) == 4, timeout=15, message="four flood tasks running"
        )

        submitted_at = time.time()
        task_id = submit(other, "probe", {"seconds": 0})
        done = wait_status(other, task_id, timeout=15)
        assert done["status"] == "completed", done
        waited = done["output"][0]["entered"] - submitted_at
        assert waited <= FLOOD_SECONDS + DISPATCH_ALLOWANCE, f"started {waited:.3f} s after"

    # The backlog is still there: the other task did not wait for it to drain.
    assert _queued(data_dir) > FLOOD_TASKS - 100
