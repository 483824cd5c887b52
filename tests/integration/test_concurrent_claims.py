"""Claimers running at once, each on its own connection (as worker processes do):
no account ever has more tasks running than its limit, no task is claimed twice,
and accounts take turns.

Each claimer holds what it claimed until after its next claim, so holdings
overlap without any sleep, and every claimer's first batch is held at one moment
(the claimers meet at a barrier after their first claim): otherwise one claimer
could drain the queue alone while the others wait for SQLite's write lock, and no
account would ever run two tasks at once.

Two witnesses of the limit: the interval each task was held for, recorded after
its claim committed and before its finish began (so it lies inside the time the
database had it running: recorded overlaps are real ones), and a sampler that
counts running tasks per account in one statement while the claimers run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import Connection, func, select

from taskgate.composition import Services
from taskgate.core.models import Task
from taskgate.core.states import TaskStatus
from taskgate.store import queue
from taskgate.store.db import Database
from taskgate.store.queue import Finish
from taskgate.store.tables import tasks
from tests.integration.taskrows import SECOND, T0, add_account, insert_tasks, lease_of, make_task

CLAIMERS = 4
BATCH = 2
DEADLINE = 60.0


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an interval ending at the instant
    another starts does not overlap it)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = open_now = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_max_overlap_sees_an_excess() -> None:
    assert max_overlap([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert max_overlap([(0, 1), (1, 2)]) == 1
    assert max_overlap([(0, 10), (1, 2), (1.5, 3)]) == 3


class Run:
    """Shared record of a run: who held what when, and the order of claims."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.claim_order: list[str] = []
        self.claimed_ids: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.first_claims = threading.Barrier(CLAIMERS, timeout=DEADLINE)


def _claimer(url: str, name: str, run: Run, clock: Callable[[], int]) -> None:
    db = Database(url, pool_size=2)
    holding: list[tuple[Task, float]] = []
    first = True
    try:
        while not run.stop.is_set():
            claimed = db.write_sync(
                lambda conn: queue.claim(
                    conn,
                    worker_id=name,
                    queues=["default"],
                    limit=BATCH,
                    now=clock(),
                    lease_us=3600 * SECOND,
                )
            )
            started = time.monotonic()
            with run.lock:
                run.claim_order.extend(t.account_id for t in claimed)
                run.claimed_ids.update(t.id for t in claimed)
            if first:
                first = False
                run.first_claims.wait()
            ended = time.monotonic()
            outcomes = [Finish(lease_of(task), TaskStatus.COMPLETED) for task, _ in holding]
            if outcomes:
                done = db.write_sync(partial(_finish, outcomes=outcomes, now=clock()))
                assert len(done) == len(outcomes), "a held task was lost"
            with run.lock:
                for task, since in holding:
                    run.held[task.account_id].append((since, ended))
            holding = [(task, started) for task in claimed]
            # Nothing to claim and nothing held: the run is over for this one unless
            # others still hold tasks (then it tries again).
            if not claimed and not outcomes and _all_done(db):
                return
    except BaseException as exc:
        run.errors.append(exc)
        run.stop.set()
        run.first_claims.abort()
    finally:
        db.close()


def _finish(conn: Connection, *, outcomes: list[Finish], now: int) -> list[Task]:
    return queue.finish_many(conn, outcomes, now)


def _all_done(db: Database) -> bool:
    left = db.read_sync(
        lambda conn: conn.execute(
            select(func.count())
            .select_from(tasks)
            .where(tasks.c.status.in_([TaskStatus.QUEUED.value, TaskStatus.RUNNING.value]))
        ).scalar_one()
    )
    return int(left) == 0


def _sampler(url: str, run: Run, seen: dict[str, int]) -> None:
    db = Database(url, pool_size=1)
    try:
        while not run.stop.is_set():
            counts: dict[str, int] = db.read_sync(
                lambda conn: dict(
                    conn.execute(
                        select(tasks.c.account_id, func.count())
                        .where(tasks.c.status == TaskStatus.RUNNING.value)
                        .group_by(tasks.c.account_id)
                    ).all()
                )
            )
            for account_id, count in counts.items():
                seen[account_id] = max(seen.get(account_id, 0), int(count))
    except BaseException as exc:
        run.errors.append(exc)
    finally:
        db.close()


def _run(services: Services, limits: dict[str, int], backlog: int) -> tuple[Run, dict[str, Any]]:
    accounts = {name: add_account(services, name, concurrency=n) for name, n in limits.items()}
    ticks = iter(range(1, 10**9))
    tick_lock = threading.Lock()

    def clock() -> int:
        with tick_lock:
            return T0 + next(ticks) * 1000

    # One account's whole backlog after another's: a claim that served tasks in
    # submission order would serve the first account's backlog first.
    for account in accounts.values():
        insert_tasks(services, [make_task(account.id, created_at=clock()) for _ in range(backlog)])
    url = services.db.url
    run = Run()
    seen: dict[str, int] = {}
    claimers = [
        threading.Thread(target=_claimer, args=(url, f"wrk_{i}", run, clock), daemon=True)
        for i in range(CLAIMERS)
    ]
    sampler = threading.Thread(target=_sampler, args=(url, run, seen), daemon=True)
    sampler.start()
    for thread in claimers:
        thread.start()
    deadline = time.monotonic() + DEADLINE
    for thread in claimers:
        thread.join(max(0.0, deadline - time.monotonic()))
    timed_out = any(thread.is_alive() for thread in claimers)
    run.stop.set()
    for thread in claimers:
        thread.join(10)
    sampler.join(10)
    assert not run.errors, run.errors
    assert not timed_out, "the claimers did not drain the queue in time"
    by_name = {a.id: name for name, a in accounts.items()}
    return run, {"by_name": by_name, "seen": {by_name[k]: v for k, v in seen.items()}}


def test_concurrent_claimers_never_exceed_an_account_limit(services: Services) -> None:
    limits = {"one": 1, "two": 2, "three": 3, "wide": 8}
    run, info = _run(services, limits, backlog=25)
    by_name = info["by_name"]
    # Every task claimed exactly once, all of them.
    assert set(run.claimed_ids.values()) == {1}
    assert len(run.claimed_ids) == 25 * len(limits)
    overlaps = {by_name[a]: max_overlap(held) for a, held in run.held.items()}
    for name, limit in limits.items():
        assert overlaps[name] <= limit, (name, overlaps)
        assert info["seen"].get(name, 0) <= limit, (name, info["seen"])
    # Holdings of one account did overlap (as the claimers recorded them, or as the
    # sampler saw the running tasks): the claimers contended for the limits.
    assert overlaps["one"] == 1
    wider = ("two", "three", "wide")
    contended = max(max(overlaps[n], info["seen"].get(n, 0)) for n in wider)
    assert contended >= 2, (overlaps, info["seen"])
    stored = services.db.read_sync(
        lambda conn: conn.execute(select(func.sum(tasks.c.attempts))).scalar_one()
    )
    assert stored == 25 * len(limits)


def test_concurrent_claimers_let_accounts_take_turns(services: Services) -> None:
    names = [f"acct{i}" for i in range(6)]
    # More capacity per account than the claimers hold in all: what spreads the
    # claims is the order of turns, not the limits.
    run, info = _run(services, dict.fromkeys(names, 2 * CLAIMERS * BATCH), backlog=20)
    by_name = info["by_name"]
    first = [by_name[a] for a in run.claim_order[: 4 * len(names)]]
    share = Counter(first)
    # Accounts were served in rounds: within the first four rounds' worth of
    # claims each account got close to its fair share of four.
    assert set(share) == set(names), share
    assert max(share.values()) - min(share.values()) <= 3, share
