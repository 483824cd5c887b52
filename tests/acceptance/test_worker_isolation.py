"""CPU isolation: handlers that keep their CPUs busy slow neither the API nor other
accounts' tasks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.worker_support import (
    executors,
    get_task,
    running_ids,
    serve_worker,
    submit,
    wait_status,
)
from tests.helpers import ServerProcess, run_cli, start_server, wait_until

pytestmark = pytest.mark.acceptance

REQUESTS = 200


@pytest.fixture
def three_slots(data_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(data_dir, env={"TASKGATE_WORKERS": "3"})
    try:
        yield proc
    finally:
        proc.stop()


def _account_key(data_dir: Path, name: str, *options: str) -> str:
    run_cli(data_dir, "accounts", "create", name, "--credits", "100", *options)
    key = run_cli(data_dir, "keys", "create", name).stdout.strip().splitlines()[-1].strip()
    assert key.startswith("tg_live_"), key
    return key


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_busy_handlers_leave_the_api_and_other_accounts_alone(three_slots: ServerProcess) -> None:
    server = three_slots
    data_dir = server.data_dir
    spinner_key = _account_key(data_dir, "spinner", "--concurrency", "2")
    other_key = _account_key(data_dir, "other")

    with server.client(spinner_key) as spinner, server.client(other_key) as other:
        spins = [submit(spinner, "spin", {"seconds": 60}) for _ in range(4)]
        try:
            # Two run (the account's limit), the other two wait although a slot is free.
            wait_until(lambda: len(running_ids(spinner)) == 2, timeout=10, message="two spins")
            busy = [get_task(spinner, s)["id"] for s in spins if s in running_ids(spinner)]
            assert len(busy) == 2

            # Another account's task starts at once on the free slot.
            submitted = time.time()
            probe = submit(other, "probe", {"seconds": 0})
            done = wait_status(other, probe, timeout=5)
            assert done["status"] == "completed", done
            assert done["output"][0]["entered"] - submitted < 3.0

            # The API answers quickly while both spinning handlers hold their CPUs.
            slots = executors(serve_worker(server.process.pid))
            cpu_before = {p: _cpu_seconds(p) for p in slots}
            wall = time.monotonic()
            with httpx.Client(base_url=server.base_url, timeout=5) as http:
                http.get("/healthz")  # connect
                latencies = []
                for _ in range(REQUESTS):
                    started = time.perf_counter()
                    response = http.get("/healthz")
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200
            wall = time.monotonic() - wall
            p99 = statistics.quantiles(latencies, n=100)[98]
            assert p99 < 0.050, f"p99 {p99 * 1000:.1f} ms"

            # The spinning was real, and went on all along (an idle executor uses no CPU;
            # the client and the server take their share of two CPUs too).
            used = sorted((_cpu_seconds(p) - cpu_before[p] for p in slots), reverse=True)
            # (loose: other processes on a shared machine take their share too)
            assert used[1] > 0.1 * wall, (used, wall)
            assert sorted(running_ids(spinner)) == sorted(busy)
            assert [get_task(spinner, s)["status"] for s in spins].count("queued") == 2
        finally:
            for task_id in spins:
                spinner.post(f"/v1/tasks/{task_id}/cancel")
        for task_id in spins:
            assert wait_status(spinner, task_id, timeout=10)["status"] == "cancelled"
