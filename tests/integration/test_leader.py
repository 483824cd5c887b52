"""Leader leases on both databases: one holder at a time, renewals, takeovers, and
the maintenance loop that runs under the lease (only its holder recovers tasks)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from taskgate.composition import Services
from taskgate.core.clock import now_us
from taskgate.core.states import TaskStatus
from taskgate.services.maintenance import MAINTENANCE, Maintenance, maintenance_for
from taskgate.store import leader, queue
from tests.integration.taskrows import SECOND, T0, add_account, insert_tasks, make_task, task_row

TTL = 3 * SECOND


def _write(services: Services, fn: Callable[[Any], Any]) -> Any:
    return services.db.write_sync(fn)


def test_the_holder_renews_and_others_wait_until_its_lease_ran_out(services: Services) -> None:
    def campaign(holder: str, now: int, name: str = "duty") -> leader.Term | None:
        return services.db.write_sync(lambda c: leader.campaign(c, name, holder, now, TTL))

    first = campaign("a", T0)
    assert first == leader.Term("a", 1, T0, T0 + TTL)
    assert campaign("b", T0 + 1) is None
    renewed = campaign("a", T0 + SECOND)
    assert renewed == leader.Term("a", 1, T0, T0 + SECOND + TTL)
    # Until the renewed lease runs out, b still gets nothing.
    assert campaign("b", T0 + TTL) is None
    assert campaign("b", T0 + SECOND + TTL - 1) is None
    taken = campaign("b", T0 + SECOND + TTL)
    assert taken == leader.Term("b", 2, T0 + SECOND + TTL, T0 + SECOND + 2 * TTL)
    assert campaign("a", T0 + SECOND + TTL + 1) is None
    assert _write(services, lambda c: leader.current(c, "duty")) == taken
    # Another duty is a lease of its own.
    other = campaign("a", T0 + 2 * SECOND, "other")
    assert other == leader.Term("a", 1, T0 + 2 * SECOND, T0 + 2 * SECOND + TTL)


def test_holds_and_resign(services: Services) -> None:
    now = T0 + 10 * SECOND
    _write(services, lambda c: leader.campaign(c, "duty", "a", now, TTL))
    assert _write(services, lambda c: leader.holds(c, "duty", "a", now + 1))
    assert not _write(services, lambda c: leader.holds(c, "duty", "b", now + 1))
    assert not _write(services, lambda c: leader.holds(c, "duty", "a", now + TTL))
    # Only the holder resigns, and then anyone takes over at once (a new term).
    assert not _write(services, lambda c: leader.resign(c, "duty", "b", now + 1))
    assert _write(services, lambda c: leader.resign(c, "duty", "a", now + 1))
    assert not _write(services, lambda c: leader.holds(c, "duty", "a", now + 2))
    term = _write(services, lambda c: leader.campaign(c, "duty", "b", now + 2, TTL))
    assert term is not None and (term.holder, term.term) == ("b", 2)
    # A holder whose own lease ran out starts a new term too.
    again = _write(services, lambda c: leader.campaign(c, "duty", "b", now + 2 + TTL, TTL))
    assert again is not None and again.term == 3


def test_concurrent_campaigns_elect_exactly_one_holder_per_term(services: Services) -> None:
    """Eight processes' worth of threads campaign at the same instant, round after
    round (each round after the last lease ran out): each round has one winner."""
    candidates = [f"node-{i}" for i in range(8)]
    rounds = 15
    barrier = threading.Barrier(len(candidates))

    def campaign(holder: str) -> list[int]:
        won = []
        for r in range(rounds):
            barrier.wait(timeout=30)
            term = services.db.write_sync(
                partial(leader.campaign, name="duty", holder=holder, now=T0 + r * TTL, ttl_us=TTL)
            )
            if term is not None:
                assert term.holder == holder
                won.append(r)
        return won

    with ThreadPoolExecutor(len(candidates)) as pool:
        results = list(pool.map(campaign, candidates))
    wins = sorted(r for won in results for r in won)
    assert wins == list(range(rounds))
    final = _write(services, lambda c: leader.current(c, "duty"))
    assert final.term == rounds


def _maintenance(services: Services, ttl: float) -> Maintenance:
    settings = services.settings.model_copy(update={"lease_seconds": ttl})
    return maintenance_for(settings, services.db, services.files.storage)


def test_one_maintenance_leader_at_a_time_and_a_successor_when_it_stops(
    services: Services,
) -> None:
    """Three maintenance loops on one database: sampled every few milliseconds,
    never two count themselves the leader; when the leader stops (it resigns),
    another leads within a renewal period; its recovery puts back a task whose
    worker's lease ran out."""
    ttl = 2.0
    account = add_account(services, "acme")
    insert_tasks(services, [make_task(account.id, created_at=now_us() - 20 * SECOND)])
    loops = [_maintenance(services, ttl) for _ in range(3)]

    async def scenario() -> None:
        runs = [asyncio.create_task(m.run()) for m in loops]
        overlaps: list[list[str]] = []

        async def sample_until(condition: Callable[[], bool], within: float) -> None:
            deadline = time.monotonic() + within
            while not condition():
                leading = [m.leadership.holder for m in loops if m.leadership.is_leader]
                if len(leading) > 1:
                    overlaps.append(leading)
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.005)

        try:
            await sample_until(lambda: any(m.leadership.is_leader for m in loops), 10)
            (first,) = [i for i, m in enumerate(loops) if m.leadership.is_leader]
            # The leader keeps the lease across renewals.
            stay = time.monotonic() + 2 * ttl
            await sample_until(lambda: time.monotonic() >= stay, 10)
            assert loops[first].leadership.is_leader
            runs[first].cancel()
            await asyncio.gather(runs[first], return_exceptions=True)
            started = time.monotonic()
            others = [m for i, m in enumerate(loops) if i != first]
            await sample_until(lambda: any(m.leadership.is_leader for m in others), 10)
            assert time.monotonic() - started < ttl, "the successor waited for the lease"
            term = _write(services, lambda c: leader.current(c, MAINTENANCE))
            (successor,) = [m for m in others if m.leadership.is_leader]
            assert (term.holder, term.term) == (successor.leadership.holder, 2)
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
        assert overlaps == []

    # A task claimed by a worker that died long ago: its lease has run out.
    (task,) = _write(
        services,
        lambda conn: queue.claim(
            conn,
            worker_id="wrk_dead",
            queues=["default"],
            limit=1,
            now=now_us() - 10 * SECOND,
            lease_us=SECOND,
        ),
    )
    asyncio.run(scenario())
    row = task_row(services, task.id)
    assert row["status"] == TaskStatus.QUEUED
    assert row["error"]["code"] == "worker_lost"
