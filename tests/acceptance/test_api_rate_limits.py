"""Rate limits over real HTTP: per API key and class (reads, writes), the IETF draft
``RateLimit-Policy`` / ``RateLimit`` headers on every response of a limited route,
429 ``rate_limited`` with ``Retry-After`` over the limit, nothing written by a refused
request, per-account overrides, and counters shared through Redis."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.acceptance.apitools import (
    KEY_ID,
    Account,
    assert_error,
    create_account,
    module_server,
    sql,
    submit,
    task_ids,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.acceptance

READS, WRITES = 3, 2
LIMITS = {
    "TASKGATE_RATE_LIMIT_READS": f"{READS}/minute",
    "TASKGATE_RATE_LIMIT_WRITES": f"{WRITES}/minute",
}
REDIS_URL = os.environ.get("TASKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_STATE = re.compile(r'^"(reads|writes)";r=(\d+);t=(\d+)$')


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    # No workers: tasks stay queued, so cancel and delete behave the same every run.
    yield from module_server(tmp_path_factory, backend, "--no-workers", env=LIMITS)


@pytest.fixture
def acct(srv: ServerProcess) -> Account:
    """A fresh account, so a fresh key with untouched counters."""
    return create_account(srv, "rl")


def quota(response: httpx.Response) -> tuple[str, int, int, int, int]:
    """(policy, q, w, r, t) from the two headers, which must name the same policy."""
    policy = response.headers["ratelimit-policy"]
    found = re.match(r'^"(reads|writes)";q=(\d+);w=(\d+)$', policy)
    assert found, policy
    state = _STATE.match(response.headers["ratelimit"])
    assert state, response.headers["ratelimit"]
    assert state[1] == found[1], response.headers
    return found[1], int(found[2]), int(found[3]), int(state[2]), int(state[3])


def assert_quota(response: httpx.Response, policy: str, limit: int, remaining: int) -> None:
    name, q, w, r, t = quota(response)
    assert (name, q, w, r) == (policy, limit, 60, remaining), response.headers
    # The window frees its oldest request a minute after it was made.
    assert 55 <= t <= 60, response.headers


def assert_refused(response: httpx.Response, policy: str, limit: int) -> int:
    """A 429 ``rate_limited`` with ``Retry-After`` and the headers; its Retry-After."""
    error = assert_error(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, response.headers
    assert error["details"] == {"retry_after": int(retry_after)}, error
    assert_quota(response, policy, limit, 0)
    assert quota(response)[4] == int(retry_after)
    return int(retry_after)


def assert_unheaded(response: httpx.Response) -> None:
    assert "ratelimit" not in response.headers, response.headers
    assert "ratelimit-policy" not in response.headers, response.headers


def test_reads_count_down_then_429(srv: ServerProcess, acct: Account) -> None:
    with srv.client(acct.key) as http:
        for left in range(READS - 1, -1, -1):
            response = http.get("/v1/tasks")
            assert response.status_code == 200, response.text
            assert_quota(response, "reads", READS, left)
        assert_refused(http.get("/v1/tasks"), "reads", READS)
        # Every read route draws on the same quota, the fast GET route included.
        assert_refused(http.get("/v1/tasks/task_nope"), "reads", READS)
        assert_refused(http.post("/v1/tasks/query", json={"task_id": "x"}), "reads", READS)
        # Writes have their own quota.
        created = http.post("/v1/tasks", json={"workflow": "wait"})
        assert created.status_code == 201, created.text
        assert_quota(created, "writes", WRITES, WRITES - 1)


def test_every_read_route_is_limited_and_errors_carry_the_headers(
    srv: ServerProcess, acct: Account
) -> None:
    with srv.client(acct.key) as http:
        missing = http.get("/v1/tasks/task_nope")
        assert_error(missing, 404, "task_not_found")
        assert_quota(missing, "reads", READS, READS - 1)
        queried = http.post("/v1/tasks/query", json={"out_task_id": "nope"})
        assert_error(queried, 404, "task_not_found")
        assert_quota(queried, "reads", READS, READS - 2)
        bad = http.get("/v1/tasks", params={"limit": 0})
        assert_error(bad, 400, "invalid_param")
        assert_quota(bad, "reads", READS, 0)
        assert_refused(http.get("/v1/tasks"), "reads", READS)


def test_a_refused_submit_writes_nothing(srv: ServerProcess, acct: Account) -> None:
    with srv.client(acct.key) as http:
        made = []
        for left in range(WRITES - 1, -1, -1):
            response = http.post("/v1/tasks", json={"workflow": "wait"})
            assert response.status_code == 201, response.text
            assert_quota(response, "writes", WRITES, left)
            made.append(response.json()["id"])
        assert_refused(
            http.post("/v1/tasks", json={"workflow": "wait", "out_task_id": "refused"}),
            "writes",
            WRITES,
        )
        assert_refused(
            http.post("/v1/workflows/wait/tasks", json={"out_task_id": "refused"}),
            "writes",
            WRITES,
        )
        assert sorted(task_ids(http)) == sorted(made)


def test_a_refused_cancel_or_delete_changes_nothing(srv: ServerProcess, acct: Account) -> None:
    with srv.client(acct.key) as http:
        task = submit(http)
        cancelled = http.post(f"/v1/tasks/{task['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert_quota(cancelled, "writes", WRITES, 0)
        assert_refused(http.delete(f"/v1/tasks/{task['id']}"), "writes", WRITES)
        still = http.get(f"/v1/tasks/{task['id']}")
        assert still.status_code == 200, still.text
        assert still.json()["status"] == "cancelled"

    other = create_account(srv, "rl-cancel")
    with srv.client(other.key) as http:
        first, second = submit(http), submit(http)
        assert_refused(http.post(f"/v1/tasks/{first['id']}/cancel"), "writes", WRITES)
        assert {t["id"]: t["status"] for t in (http.get("/v1/tasks").json()["data"])} == {
            first["id"]: "queued",
            second["id"]: "queued",
        }


def test_two_keys_of_one_account_are_counted_apart(srv: ServerProcess, acct: Account) -> None:
    spare = run_cli(srv.data_dir, "keys", "create", acct.id).stdout.strip()
    with srv.client(acct.key) as first, srv.client(spare) as second:
        for _ in range(READS):
            assert first.get("/v1/tasks").status_code == 200
        assert_refused(first.get("/v1/tasks"), "reads", READS)
        response = second.get("/v1/tasks")
        assert response.status_code == 200, response.text
        assert_quota(response, "reads", READS, READS - 1)


def test_the_catalogue_and_operations_routes_are_not_limited(
    srv: ServerProcess, acct: Account
) -> None:
    with srv.client(acct.key) as http:
        for _ in range(READS + WRITES + 2):
            for path in ("/v1/workflows", "/v1/workflows/wait", "/healthz"):
                response = http.get(path)
                assert response.status_code == 200, response.text
                assert_unheaded(response)
        assert_quota(http.get("/v1/tasks"), "reads", READS, READS - 1)


def _override(srv: ServerProcess, account: Account, **limits: str | None) -> None:
    """Set an account's overrides with SQL (what the CLI and admin API will do)."""
    for column, value in limits.items():
        sql(srv.data_dir, f"UPDATE accounts SET {column} = ? WHERE name = ?", value, account.name)


def test_an_account_override_wins_over_the_default(srv: ServerProcess, acct: Account) -> None:
    _override(srv, acct, rate_limit_reads="2/minute", rate_limit_writes="unlimited")
    with srv.client(acct.key) as http:
        for left in (1, 0):
            response = http.get("/v1/tasks")
            assert response.status_code == 200, response.text
            assert_quota(response, "reads", 2, left)
        assert_refused(http.get("/v1/tasks"), "reads", 2)
        for _ in range(WRITES * 3):
            response = http.post("/v1/tasks", json={"workflow": "wait"})
            assert response.status_code == 201, response.text
            assert_unheaded(response)

    _override(srv, acct, rate_limit_writes=None)
    with srv.client(acct.key) as http:
        response = http.post("/v1/tasks", json={"workflow": "wait"})
        assert response.status_code == 201, response.text
        assert_quota(response, "writes", WRITES, WRITES - 1)


@pytest.fixture(scope="module")
def reads_off(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory,
        backend,
        "--no-workers",
        env={
            "TASKGATE_RATE_LIMIT_READS": "unlimited",
            "TASKGATE_RATE_LIMIT_WRITES": "2/minute;50/hour",
        },
    )


def test_unlimited_turns_a_class_off(reads_off: ServerProcess) -> None:
    account = create_account(reads_off, "rl-off")
    with reads_off.client(account.key) as http:
        task = submit(http)
        for _ in range(30):
            for response in (
                http.get("/v1/tasks"),
                http.get(f"/v1/tasks/{task['id']}"),
                http.post("/v1/tasks/query", json={"task_id": task["id"]}),
            ):
                assert response.status_code == 200, response.text
                assert_unheaded(response)


def test_the_headers_name_the_tightest_of_several_limits(reads_off: ServerProcess) -> None:
    account = create_account(reads_off, "rl-many")
    with reads_off.client(account.key) as http:
        # 2/minute has fewer requests left than 50/hour.
        assert_quota(http.post("/v1/tasks", json={"workflow": "wait"}), "writes", 2, 1)
        assert_quota(http.post("/v1/tasks", json={"workflow": "wait"}), "writes", 2, 0)
        assert_refused(http.post("/v1/tasks", json={"workflow": "wait"}), "writes", 2)
        assert len(task_ids(http)) == 2


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    try:
        yield client
    finally:
        client.close()


def test_redis_counters_are_shared_by_servers(data_dir: Path, redis_client: redis.Redis) -> None:
    env = {**LIMITS, "TASKGATE_RATE_LIMIT_STORAGE_URL": REDIS_URL}
    first = start_server(data_dir, "--no-workers", env=env)
    second: ServerProcess | None = None
    key_id: str | None = None
    try:
        # A second API process on the same data: the distributed layout in small.
        second = start_server(data_dir, "--no-workers", env=env)
        assert first.api_key is not None
        listed = run_cli(data_dir, "keys", "list", "default").stdout
        found = KEY_ID.search(listed)
        assert found, listed
        key_id = found[0]
        servers = [first, second]
        for n in range(READS):
            with servers[n % 2].client(first.api_key) as http:
                response = http.get("/v1/tasks")
                assert response.status_code == 200, response.text
                assert_quota(response, "reads", READS, READS - 1 - n)
        for server in servers:
            with server.client(first.api_key) as http:
                assert_refused(http.get("/v1/tasks"), "reads", READS)
        # The counters live in Redis, under the taskgate prefix and the key's id.
        stored = [k.decode() for k in redis_client.scan_iter(match=f"taskgate:*{key_id}*")]
        assert stored, "no counter in Redis"
    finally:
        for started in (first, second):
            if started is not None:
                started.stop()
        if key_id is not None:
            _delete(redis_client, f"taskgate:*{key_id}*")


def _delete(client: redis.Redis, pattern: str) -> None:
    """Only this test's keys: other tests may share the Redis server."""
    keys: list[Any] = list(client.scan_iter(match=pattern))
    if keys:
        client.delete(*keys)
