"""The API with a large tasks table: the ``big_table`` phase of ``bench/run.py
--database postgresql``.

Two databases are measured the same way, one after the other:

- ``small``: the bench account, ``LOAD_ACCOUNTS`` other accounts each at its
  concurrency limit (two running tasks under a long lease) with one queued task;
- ``big``: the same, with ``--big-tasks`` tasks in all: ``--big-queued`` queued
  ones spread over the other accounts and the rest completed.

The rows are copies of real ones made through the CLI and the API (a completed
task, the bench account), written by ``INSERT … SELECT … generate_series`` with
every column of the table definitions, so that they have the shape the API
reads. Events are not copied: reading a task does not read them. The other
accounts being full, the server's worker slots claim only the bench account's
tasks (the dispatch samples), and the queue keeps its size while it is measured.

On each: ``GET /v1/tasks/{id}`` of a completed task of the bench account and of
the last queued task of another account (its queue position is computed on
every read) with wrk; the dispatch latency; then on ``serve --no-workers``
``POST /v1/tasks`` with wrk.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
from psycopg import sql

from dispatch import measure_dispatch
from probe import Probe
from procs import HOST, answers, free_port, taskgate_cli, wait_for
from taskgate.core.clock import now_us
from taskgate.store.tables import accounts, tasks

if TYPE_CHECKING:
    from run import Bench, Results

LOAD_ACCOUNTS = 100
LOAD_CONCURRENCY = 2
LOAD_PREFIX = "bigtable"
DAY_US = 86_400_000_000


def _insert_copies(
    table: Any, template_id: str, count: int, overrides: dict[str, str]
) -> sql.Composed:
    """``INSERT INTO table SELECT`` ``count`` copies of row ``template_id``: every
    column of the table as in the template, but ``overrides`` (SQL expressions of
    ``g``, the copy's number from 1, and ``t``, the template)."""
    columns = [c.name for c in table.c]
    unknown = set(overrides) - set(columns)
    if unknown:
        raise ValueError(f"no such columns in {table.name}: {sorted(unknown)}")
    values = [
        sql.SQL(overrides[name])
        if name in overrides
        else sql.SQL("t.{}").format(sql.Identifier(name))
        for name in columns
    ]
    return sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {values} FROM {table} AS t "
        "CROSS JOIN generate_series(1::bigint, {count}) AS g WHERE t.id = {template}"
    ).format(
        table=sql.Identifier(table.name),
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in columns),
        values=sql.SQL(", ").join(values),
        count=sql.Literal(count),
        template=sql.Literal(template_id),
    )


def _load_account(expr: str) -> str:
    """The id of load account number ``expr`` (1-based, an SQL expression)."""
    return f"'acct_{LOAD_PREFIX}' || lpad(({expr})::text, 6, '0')"


def fill(
    url: str, *, template_task: str, bench_account: str, total: int, queued: int
) -> dict[str, Any]:
    """Add the load accounts and their tasks: ``2 × LOAD_ACCOUNTS`` running,
    ``queued`` queued and the rest of ``total`` (less the template) completed."""
    now = now_us()
    running = LOAD_ACCOUNTS * LOAD_CONCURRENCY
    completed = max(0, total - 1 - running - queued)
    # Every task id here sorts before those taskgate makes (which start with a
    # time stamp from ``01``): the copies are older than the bench's own tasks.
    fresh = {
        "worker_id": "NULL",
        "lease_expires_at": "NULL",
        "started_at": "NULL",
        "completed_at": "NULL",
        "output": "NULL",
        "usage": "NULL",
        "warnings": "NULL",
        "error": "NULL",
        "charged_credits": "NULL",
        "refunded_credits": "NULL",
        "progress_percent": "0",
        "progress_stage": "NULL",
        "progress_message": "NULL",
        "attempts": "0",
        "event_seq": "1",
    }
    steps: list[tuple[str, sql.Composed]] = [
        (
            "accounts",
            _insert_copies(
                accounts,
                bench_account,
                LOAD_ACCOUNTS,
                {
                    "id": _load_account("g"),
                    "name": f"'{LOAD_PREFIX}-' || lpad(g::text, 6, '0')",
                    "concurrency_limit": str(LOAD_CONCURRENCY),
                    "running": str(LOAD_CONCURRENCY),
                    "last_claim_at": f"{now}",
                    "callback_secret": "NULL",
                },
            ),
        ),
        (
            "running tasks",
            _insert_copies(
                tasks,
                template_task,
                running,
                {
                    **fresh,
                    "id": "'task_00R' || lpad(g::text, 23, '0')",
                    "account_id": _load_account(f"(g - 1) % {LOAD_ACCOUNTS} + 1"),
                    "status": "'running'",
                    "worker_id": "'wrk_bigtable'",
                    "lease_expires_at": f"{now + DAY_US}",
                    "started_at": f"{now}",
                    "attempts": "1",
                    "event_seq": "2",
                    "created_at": f"{now} - 1000000",
                    "updated_at": f"{now}",
                    "run_at": f"{now} - 1000000",
                },
            ),
        ),
        (
            "queued tasks",
            _insert_copies(
                tasks,
                template_task,
                queued,
                {
                    **fresh,
                    "id": "'task_00Q' || lpad(g::text, 23, '0')",
                    "account_id": _load_account(f"(g - 1) % {LOAD_ACCOUNTS} + 1"),
                    "status": "'queued'",
                    "created_at": f"{now} - 1000000 + g",
                    "updated_at": f"{now} - 1000000 + g",
                    "run_at": f"{now} - 1000000 + g",
                },
            ),
        ),
        (
            "completed tasks",
            _insert_copies(
                tasks,
                template_task,
                completed,
                {
                    "id": "'task_00C' || lpad(g::text, 23, '0')",
                    "account_id": _load_account(f"(g - 1) % {LOAD_ACCOUNTS} + 1"),
                    # Spread over the last 29 days: inside the default retention of 30.
                    **dict.fromkeys(
                        ("created_at", "updated_at", "run_at", "started_at", "completed_at"),
                        f"{now} - {29 * DAY_US} + g * {29 * DAY_US // max(1, completed)}",
                    ),
                },
            ),
        ),
    ]
    seconds: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, statement in steps:
            started = time.perf_counter()
            conn.execute(statement)
            seconds[name] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        # As autovacuum would leave the table: statistics, and a visibility map
        # for index-only scans.
        conn.execute("VACUUM ANALYZE accounts, tasks")
        seconds["vacuum analyze"] = round(time.perf_counter() - started, 2)
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'queued'), "
            "pg_total_relation_size('tasks') FROM tasks"
        ).fetchone()
    assert row is not None
    return {"tasks": row[0], "queued": row[1], "table_bytes": row[2], "seconds": seconds}


def _last_queued(url: str) -> str:
    """The newest queued task of the first load account (the end of its queue)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM tasks WHERE account_id = %s AND status = 'queued' "
            "ORDER BY priority, id DESC LIMIT 1",
            (f"acct_{LOAD_PREFIX}{1:06d}",),
        ).fetchone()
    if row is None:
        raise RuntimeError("no queued task of the first load account")
    return str(row[0])


def measure(bench: Bench, name: str, *, total: int, queued: int) -> Results:
    """One database: fill it, then poll, dispatch and submit."""
    data_dir, key = bench.data_dir(name)
    url = bench.urls[data_dir]
    port = free_port()
    base = f"http://{HOST}:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    args = bench.args
    # The template: a task completed through the API and a worker.
    with (
        bench.serve(data_dir, port, "--workers", "1") as server,
        Probe(data_dir, url) as probe,
        httpx.Client(base_url=base, headers=headers, timeout=30) as client,
    ):
        wait_for(lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server)
        response = client.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0}})
        response.raise_for_status()
        template = response.json()["id"]
        wait_for(
            lambda: (probe.task(template) or ("", None))[0] == "completed",
            timeout=60,
            what="the template task to complete",
        )
        bench_account = bench_account_id(url)
    filled = fill(
        url, template_task=template, bench_account=bench_account, total=total, queued=queued
    )
    fill_seconds = sum(filled["seconds"].values())
    print(
        f"{name:<6} {filled['tasks']:,} tasks ({filled['queued']:,} queued), table and indexes "
        f"{filled['table_bytes'] / 2**20:,.0f} MiB; filled in {fill_seconds:.1f} s",
        flush=True,
    )
    load_key = taskgate_cli(data_dir, "keys", "create", f"{LOAD_PREFIX}-{1:06d}", database_url=url)
    load_headers = {"Authorization": f"Bearer {load_key.strip().splitlines()[-1].strip()}"}
    queued_task = _last_queued(url)
    port = free_port()
    base = f"http://{HOST}:{port}"
    with (
        bench.serve(data_dir, port, "--workers", str(args.serve_workers)) as server,
        Probe(data_dir, url) as probe,
        httpx.Client(base_url=base, headers=headers, timeout=30) as client,
    ):
        wait_for(lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server)
        poll = bench.wrk(f"{base}/v1/tasks/{template}", headers=headers)
        print(f"{name:<6} poll         {poll.summary()}", flush=True)
        poll_queued = bench.wrk(f"{base}/v1/tasks/{queued_task}", headers=load_headers)
        print(f"{name:<6} poll queued  {poll_queued.summary()}", flush=True)
        position = client.get(f"/v1/tasks/{queued_task}", headers=load_headers).json()
        dispatch = measure_dispatch(
            client, probe, samples=args.samples, warmup=args.warmup_samples
        ).to_json()
        p50, p99 = dispatch["p50_ms"], dispatch["p99_ms"]
        print(f"{name:<6} dispatch     p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
    port = free_port()
    base = f"http://{HOST}:{port}"
    with bench.serve(data_dir, port, "--no-workers") as server:
        wait_for(lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server)
        submit = bench.wrk(
            f"{base}/v1/tasks",
            method="POST",
            body='{"workflow":"wait","input":{"seconds":0}}',
            headers={**headers, "Content-Type": "application/json"},
        )
        print(f"{name:<6} submit       {submit.summary()}", flush=True)
    return {
        "fill": filled,
        "poll": poll.to_json(),
        "poll_queued": {**poll_queued.to_json(), "queue_position": position.get("queue_position")},
        "dispatch": dispatch,
        "submit": submit.to_json(),
    }


def bench_account_id(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM accounts WHERE name = 'bench'").fetchone()
    if row is None:
        raise RuntimeError("no bench account")
    return str(row[0])


def big_table(bench: Bench) -> Results:
    """The small database, then the big one, and the ratios of their figures."""
    args = bench.args
    small = measure(bench, "small", total=0, queued=LOAD_ACCOUNTS)
    big = measure(bench, "big", total=args.big_tasks, queued=args.big_queued)
    ratios = {
        "poll_p99": big["poll"]["p99_ms"] / small["poll"]["p99_ms"],
        "poll_rate": big["poll"]["rate"] / small["poll"]["rate"],
        "poll_queued_p99": big["poll_queued"]["p99_ms"] / small["poll_queued"]["p99_ms"],
        "dispatch_p50": big["dispatch"]["p50_ms"] / small["dispatch"]["p50_ms"],
        "submit_rate": big["submit"]["rate"] / small["submit"]["rate"],
    }
    return {"big_table": {"small": small, "big": big, "ratios": ratios}}
