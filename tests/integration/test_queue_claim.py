"""The claim: priority then age within an account, accounts taking turns, and the
per-account concurrency limit — on a real SQLite file."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Any

from taskgate.composition import Services
from taskgate.core.models import Task
from taskgate.core.states import TaskStatus
from taskgate.store import queue
from taskgate.store import tasks as tasks_repo
from taskgate.store.queue import Finish
from tests.integration.taskrows import (
    SECOND,
    T0,
    add_account,
    event_count,
    event_rows,
    insert_tasks,
    lease_of,
    make_task,
    running_by_account,
    task_row,
)

LEASE = 30 * SECOND


class Clock:
    """Strictly increasing store time, one millisecond per reading."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)

    def __call__(self) -> int:
        return T0 + next(self._ticks) * 1000


def claim(
    services: Services, now: int, limit: int = 1, worker: str = "wrk_a", lease_us: int = LEASE
) -> list[Task]:
    return services.db.write_sync(
        lambda conn: queue.claim(
            conn, worker_id=worker, queues=["default"], limit=limit, now=now, lease_us=lease_us
        )
    )


def finish(services: Services, task: Task, status: TaskStatus, now: int) -> Task | None:
    return services.db.write_sync(
        lambda conn: queue.finish(conn, Finish(lease_of(task), status), now)
    )


def test_priority_first_then_age_within_an_account(services: Services) -> None:
    account = add_account(services, "acme", concurrency=10)
    clock = Clock()
    made = insert_tasks(
        services,
        [
            make_task(account.id, priority=p, created_at=clock())
            for p in (0, 5, 0, -1, 5, 10, -10, 0)
        ],
    )
    order = [t.id for _ in made for t in claim(services, clock())]
    by_priority = sorted(made, key=lambda t: (-t.priority, t.created_at))
    assert order == [t.id for t in by_priority]
    assert claim(services, clock()) == []


def test_one_claim_takes_the_highest_priorities_in_order(services: Services) -> None:
    account = add_account(services, "acme", concurrency=10)
    clock = Clock()
    made = insert_tasks(
        services,
        [make_task(account.id, priority=p, created_at=clock()) for p in (1, 3, 2, 3, 0)],
    )
    claimed = claim(services, clock(), limit=3)
    assert [t.id for t in claimed] == [made[1].id, made[3].id, made[2].id]
    assert all(t.status is TaskStatus.RUNNING and t.attempts == 1 for t in claimed)


def test_retry_waits_for_its_run_at(services: Services) -> None:
    account = add_account(services, "acme")
    clock = Clock()
    (task,) = insert_tasks(services, [make_task(account.id, created_at=clock())])
    (running,) = claim(services, clock())
    retry_at = clock() + 10 * SECOND
    services.db.write_sync(
        lambda conn: queue.finish(
            conn,
            Finish(lease_of(running), TaskStatus.QUEUED, error={"code": "x"}, retry_at=retry_at),
            clock(),
        )
    )
    assert claim(services, retry_at - 1) == []
    (again,) = claim(services, retry_at)
    assert (again.id, again.attempts) == (task.id, 2)


def test_accounts_take_turns(services: Services) -> None:
    clock = Clock()
    names = ["a", "b", "c"]
    owners = [add_account(services, name, concurrency=100) for name in names]
    for owner in owners:
        insert_tasks(services, [make_task(owner.id, created_at=clock()) for _ in range(6)])
    ids = [o.id for o in owners]
    # One at a time: a full round before any account gets a second task.
    served = [claim(services, clock())[0].account_id for _ in range(9)]
    rounds = [served[i : i + 3] for i in range(0, 9, 3)]
    assert all(sorted(r) == sorted(ids) for r in rounds), served
    assert rounds[0] == rounds[1] == rounds[2]  # and always in the same order
    # Several at a time: the free slots are dealt out one per account per round.
    batch = claim(services, clock(), limit=6)
    assert Counter(t.account_id for t in batch) == dict.fromkeys(ids, 2)


def test_a_small_account_is_served_next_despite_a_big_backlog(services: Services) -> None:
    clock = Clock()
    big = add_account(services, "big", concurrency=1000)
    small = add_account(services, "small", concurrency=4)
    # The small account was served before, so it has no NULLS FIRST advantage.
    (earlier,) = insert_tasks(services, [make_task(small.id, created_at=clock())])
    (ran,) = claim(services, clock())
    assert ran.id == earlier.id
    assert finish(services, ran, TaskStatus.COMPLETED, clock()) is not None

    insert_tasks(services, [make_task(big.id, created_at=clock()) for _ in range(1000)])
    for _ in range(5):
        (t,) = claim(services, clock())
        assert t.account_id == big.id
    (submitted,) = insert_tasks(services, [make_task(small.id, created_at=clock())])

    (next_claimed,) = claim(services, clock())
    assert next_claimed.id == submitted.id
    # ... and then it is the big account's turn again.
    assert claim(services, clock())[0].account_id == big.id
    # A batch claim also serves the small account, with its oldest task first.
    (second,) = insert_tasks(services, [make_task(small.id, created_at=clock())])
    batch = claim(services, clock(), limit=8)
    assert second.id in [t.id for t in batch]
    assert Counter(t.account_id for t in batch) == {big.id: 7, small.id: 1}


def test_claims_never_exceed_the_concurrency_limit(services: Services) -> None:
    clock = Clock()
    limits = {"one": 1, "two": 2, "three": 3}
    owners = {name: add_account(services, name, concurrency=n) for name, n in limits.items()}
    for owner in owners.values():
        insert_tasks(services, [make_task(owner.id, created_at=clock()) for _ in range(10)])

    first = claim(services, clock(), limit=100)
    assert Counter(t.account_id for t in first) == {o.id: limits[n] for n, o in owners.items()}
    assert claim(services, clock(), limit=100, worker="wrk_b") == []

    one = next(t for t in first if t.account_id == owners["one"].id)
    finish(services, one, TaskStatus.COMPLETED, clock())
    again = claim(services, clock(), limit=100, worker="wrk_b")
    assert [t.account_id for t in again] == [owners["one"].id]
    stored, real, _ = running_by_account(services)
    assert stored == real == {o.id: limits[n] for n, o in owners.items()}


def test_running_counts_stay_exact_through_a_random_mix(services: Services) -> None:
    """Claims, finishes, retries, releases, cancels and lease recoveries in random
    order: after every step ``accounts.running`` equals the real number of running
    tasks and never exceeds the limit; every change wrote exactly one event; a
    lease that is not the current one changes nothing."""
    rng = random.Random(20261122)
    clock = Clock()
    owners = [add_account(services, f"acct{i}", concurrency=i) for i in (1, 2, 3)]
    for owner in owners:
        insert_tasks(
            services,
            [
                make_task(
                    owner.id,
                    priority=rng.randint(-2, 2),
                    max_attempts=rng.randint(1, 3),
                    created_at=clock(),
                )
                for _ in range(40)
            ],
        )
    workers = ["wrk_1", "wrk_2"]
    next_worker = itertools.count(3)
    leases_seen: set[queue.Lease] = set()
    kinds: Counter[str] = Counter()

    def running() -> list[Task]:
        return services.db.read_sync(
            lambda conn: [
                t
                for t in (
                    tasks_repo.get(conn, row)
                    for row in conn.exec_driver_sql(
                        "SELECT id FROM tasks WHERE status = 'running' ORDER BY id"
                    ).scalars()
                )
                if t is not None
            ]
        )

    def write(fn: Any, *args: Any) -> Any:
        return services.db.write_sync(lambda conn: fn(conn, *args))

    for _ in range(400):
        before = event_count(services)
        now = clock()
        op = rng.choice(
            [*["claim"] * 3, "finish", "finish", "release", "recover", "recover", "cancel", "stale"]
        )
        current = running()
        changed: list[Task] = []
        if op == "claim":
            lease_us = rng.choice([2_000, 5_000, 20_000, LEASE])
            changed = claim(
                services,
                now,
                limit=rng.randint(1, 4),
                worker=rng.choice(workers),
                lease_us=lease_us,
            )
            leases_seen.update(lease_of(t) for t in changed)
        elif op == "finish" and current:
            task = rng.choice(current)
            status = rng.choice(list(TaskStatus))
            if status is TaskStatus.RUNNING or (
                status is TaskStatus.QUEUED and task.attempts >= task.max_attempts
            ):
                status = TaskStatus.FAILED
            done = finish(services, task, status, now)
            assert done is not None
            changed = [done]
        elif op == "release" and current:
            # A drained worker puts its tasks back and leaves for good.
            worker = rng.choice(workers)
            mine = [lease_of(t) for t in current if t.worker_id == worker]
            changed = write(queue.release, mine, now)
            assert len(changed) == len(mine)
            assert all(t.status is TaskStatus.QUEUED for t in changed)
            workers[workers.index(worker)] = f"wrk_{next(next_worker)}"
        elif op == "recover":
            changed = write(queue.recover_expired, now, 1000)
        elif op == "cancel" and current:
            task = rng.choice(current)
            asked = write(tasks_repo.request_cancel, task.id, now)
            changed = [asked] if asked is not None else []
        elif op == "stale" and leases_seen:
            live = {lease_of(t) for t in current}
            stale = [lease for lease in leases_seen if lease not in live]
            if stale:
                lease = rng.choice(sorted(stale, key=str))
                row = task_row(services, lease.task_id)
                outcome = Finish(lease, rng.choice([TaskStatus.COMPLETED, TaskStatus.FAILED]))
                assert write(queue.finish, outcome, now) is None
                assert not write(queue.renew, [lease], now, 1)
                assert task_row(services, lease.task_id) == row
                kinds["stale"] += 1
        kinds[op] += bool(changed)

        stored, real, limit = running_by_account(services)
        assert stored == real, op
        assert all(real[a] <= limit[a] for a in real), op
        assert event_count(services) - before == len(changed), op

    assert all(kinds[op] > 5 for op in ("claim", "finish", "release", "recover", "cancel", "stale"))
    for task_id, rows in itertools.groupby(event_rows(services), key=lambda e: e["task_id"]):
        seqs = [e["seq"] for e in rows]
        assert seqs == list(range(1, len(seqs) + 1)), task_id
        assert task_row(services, task_id)["event_seq"] == len(seqs)
