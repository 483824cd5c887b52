"""A distributed deployment on PostgreSQL: two API nodes (``serve --no-workers``)
and a ``taskgate worker`` process, sharing one database, secret key and data dir.

Every process polls only every ``POLL`` seconds, so anything that happens much
sooner was woken by LISTEN/NOTIFY: a task submitted on node A starts on the
worker, an event stream on node B follows a task submitted on node A, and a
cancel sent to node B reaches the worker, each well within a second. Leases are
long too, so a lease renewal cannot be what finds a cancel request. Both nodes run
a webhook deliverer, and each event is still delivered once. Rate-limit counters
in Redis are shared by the nodes.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from taskgate.store.db import Database
from tests.acceptance.receiver import Receiver, receiving
from tests.acceptance.test_api_events import history, open_stream
from tests.acceptance.worker_support import get_task, submit, wait_status
from tests.databases import PostgresServer
from tests.helpers import ServerProcess, run_cli, start_server, wait_until
from tests.helpers import test_env as process_env

# One xdist worker runs them all: they share one deployment of four processes.
pytestmark = [pytest.mark.acceptance, pytest.mark.xdist_group("postgresql_nodes")]

#: The poll interval of every process: far longer than any bound asserted here.
POLL = 5.0
#: How soon a woken worker must have claimed a task.
PROMPT = 1.0
#: How soon a change must have crossed several processes (worker, NOTIFY, an API
#: node's hub, HTTP): still well under a poll interval, with room for a loaded host.
FOLLOW = 2.0
NODE_ENV = {
    "TASKGATE_POLL_INTERVAL_SECONDS": str(POLL),
    "TASKGATE_LEASE_SECONDS": "30",
    "TASKGATE_ALLOW_PRIVATE_URLS": "true",
}
REDIS_URL = os.environ.get("TASKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Deployment:
    url: str
    data_dir: Path
    a: ServerProcess
    b: ServerProcess
    worker: subprocess.Popen[bytes]
    key: str

    def client(self, node: ServerProcess) -> httpx.Client:
        return node.client(self.key)


def _parse(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _make_key(data_dir: Path, url: str, account: str) -> str:
    run_cli(
        data_dir, "accounts", "create", account, "--concurrency", "4", TASKGATE_DATABASE_URL=url
    )
    return run_cli(data_dir, "keys", "create", account, TASKGATE_DATABASE_URL=url).stdout.split()[
        -1
    ]


def _listening(url: str) -> int:
    """How many processes hold a wake-up connection that listens."""
    db = Database(url, pool_size=1)
    try:
        return int(
            db.read_sync(
                lambda conn: conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND application_name = 'taskgate-wakeups'"
                        " AND (query LIKE 'LISTEN%' OR query LIKE 'SELECT pg_notify%')"
                    )
                ).scalar_one()
            )
        )
    finally:
        db.close()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("nodes")
    data_dir = root / "data"
    url = postgres_server.create()
    env = {**NODE_ENV, "TASKGATE_DATABASE_URL": url}
    nodes: list[ServerProcess] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        with (root / "worker.log").open("w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "taskgate", "worker", "--workers", "2"],
                env=process_env(data_dir, **env),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        key = _make_key(data_dir, url, "nodes")
        # Each spends seconds importing: start them side by side.
        with ThreadPoolExecutor(2) as pool:
            starting = [
                pool.submit(start_server, data_dir, "--no-workers", env=env, timeout=120)
                for _ in range(2)
            ]
            nodes.extend(f.result() for f in starting if f.exception() is None)
            for future in starting:
                future.result()  # raises what failed (the nodes started are stopped below)
        wait_until(lambda: _listening(url) >= 3, timeout=30, message="three listening processes")
        deployment = Deployment(url, data_dir, nodes[0], nodes[1], worker, key)
        # A first task: the worker's executors are up once it has run.
        with deployment.client(deployment.a) as http:
            wait_status(http, submit(http, "wait", {"seconds": 0}), "completed", timeout=30)
        yield deployment
    finally:
        for node in nodes:
            node.stop()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        postgres_server.drop(url)


def test_a_task_submitted_on_one_node_starts_on_the_worker_at_once(
    deployment: Deployment,
) -> None:
    waits = []
    with deployment.client(deployment.a) as http:
        for _ in range(5):
            task_id = submit(http, "wait", {"seconds": 0.05})
            task = wait_status(http, task_id, "completed", timeout=3 * POLL)
            waits.append(_parse(task["started_at"]) - _parse(task["created_at"]))
    print(
        f"submit on node A → started on the worker: median {statistics.median(waits) * 1000:.1f}"
        f" ms, max {max(waits) * 1000:.1f} ms (poll interval {POLL:g} s)"
    )
    assert max(waits) < PROMPT, waits


def test_a_stream_on_one_node_follows_a_task_submitted_on_the_other(
    deployment: Deployment,
) -> None:
    with deployment.client(deployment.a) as on_a, deployment.client(deployment.b) as on_b:
        task_id = submit(on_a, "wait", {"seconds": 1.2, "steps": 3})
        arrivals: list[tuple[float, Any]] = []
        url = f"/v1/tasks/{task_id}/events"
        with open_stream(on_b, url, headers={"Last-Event-ID": "0"}, timeout=4 * POLL) as stream:
            while not arrivals or arrivals[-1][1].event != "task.completed":
                event = stream.event()
                arrivals.append((time.time(), event))
        stored = history(on_a, task_id)
    events = [event for _, event in arrivals]
    # Every change, in order, each once: what the database holds.
    assert [(e.id, e.event) for e in events] == [(e.id, e.event) for e in stored]
    kinds = [e.event for e in events]
    assert kinds[:2] == ["task.created", "task.started"], kinds
    assert set(kinds[2:-1]) == {"task.progress"}, kinds
    lags = [at - _parse(event.payload["created_at"]) for at, event in arrivals]
    print(f"node B's stream behind the change: max {max(lags) * 1000:.1f} ms")
    assert max(lags) < FOLLOW, list(zip(kinds, lags, strict=True))


def test_a_cancel_sent_to_one_node_reaches_the_worker_at_once(deployment: Deployment) -> None:
    with deployment.client(deployment.a) as on_a, deployment.client(deployment.b) as on_b:
        task_id = submit(on_a, "wait", {"seconds": 60})
        wait_status(on_a, task_id, "running", timeout=PROMPT)
        url = f"/v1/tasks/{task_id}/events"
        with open_stream(on_a, url, timeout=4 * POLL) as stream:
            assert stream.event().event == "task.snapshot"
            asked = time.time()
            response = on_b.post(f"/v1/tasks/{task_id}/cancel")
            assert response.status_code == 202, response.text
            stream.until(lambda e: e.event == "task.cancelled")
            ended = time.time() - asked
        assert get_task(on_b, task_id)["status"] == "cancelled"
    print(f"cancel on node B → task.cancelled on node A's stream: {ended * 1000:.1f} ms")
    assert ended < FOLLOW


def test_each_event_is_delivered_once_by_two_deliverers(deployment: Deployment) -> None:
    wanted = ["task.created", "task.started", "task.completed"]
    with receiving() as receiver:
        with deployment.client(deployment.a) as on_a, deployment.client(deployment.b) as on_b:
            hook = on_b.post("/v1/webhooks", json={"url": receiver.url(), "enabled_events": wanted})
            assert hook.status_code == 201, hook.text
            task_ids = [submit(http, "wait", {"seconds": 0}) for http in (on_a, on_b) * 5]
            for task_id in task_ids:
                wait_status(on_a, task_id, "completed", timeout=3 * POLL)
            expected = {
                event.payload["id"]
                for task_id in task_ids
                for event in history(on_a, task_id)
                if event.event in wanted
            }
            assert len(expected) == 3 * len(task_ids)
            _wait_delivered(on_b, hook.json()["id"], len(expected))
        _check_once(receiver, expected)


def _wait_delivered(http: httpx.Client, webhook_id: str, count: int) -> None:
    def delivered() -> bool:
        page = http.get(
            f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 100, "status": "delivered"}
        )
        assert page.status_code == 200, page.text
        return len(page.json()["data"]) >= count

    wait_until(delivered, timeout=4 * POLL, interval=0.1, message=f"{count} deliveries")


def _check_once(receiver: Receiver, expected: set[str]) -> None:
    received = receiver.snapshot()
    ids = [r.webhook_id for r in received]
    assert set(ids) == expected
    assert len(ids) == len(expected), "an event was delivered more than once"


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    try:
        yield client
    finally:
        client.close()


def test_rate_limits_are_shared_by_the_nodes_through_redis(
    tmp_path: Path, postgres_server: PostgresServer, redis_db: redis.Redis
) -> None:
    """Four reads a minute per key, spread over two nodes: the fifth is refused by
    either, with the rate-limit headers."""
    url = postgres_server.create()
    data_dir = tmp_path / "data"
    env = {
        "TASKGATE_DATABASE_URL": url,
        "TASKGATE_RATE_LIMIT_STORAGE_URL": REDIS_URL,
        "TASKGATE_RATE_LIMIT_READS": "4/minute",
    }
    nodes: list[ServerProcess] = []
    key = _make_key(data_dir, url, "limited")
    key_id = run_cli(data_dir, "keys", "list", "limited", TASKGATE_DATABASE_URL=url).stdout
    try:
        nodes = [start_server(data_dir, "--no-workers", env=env, timeout=120) for _ in range(2)]
        for n in range(4):
            with nodes[n % 2].client(key) as http:
                response = http.get("/v1/tasks")
                assert response.status_code == 200, response.text
                assert response.headers["RateLimit"].startswith(f'"reads";r={3 - n};')
        for node in nodes:
            with node.client(key) as http:
                refused = http.get("/v1/tasks")
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "rate_limited"
                assert int(refused.headers["Retry-After"]) > 0
                assert refused.headers["RateLimit-Policy"] == '"reads";q=4;w=60'
                assert refused.headers["RateLimit"].startswith('"reads";r=0;')
    finally:
        for node in nodes:
            node.stop()
        postgres_server.drop(url)
        ids = [word for word in key_id.split() if word.startswith("key_")]
        for found in ids:
            stale = list(redis_db.scan_iter(match=f"taskgate:*{found}*"))
            if stale:
                redis_db.delete(*stale)
