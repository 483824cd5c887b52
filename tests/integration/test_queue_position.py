"""A queued task's position: the tasks claimed before it, accounts taking turns.
Counted in one statement, or account by account when that would scan too much;
both ways agree, and agree with the order the claim really takes."""

from __future__ import annotations

import random
from functools import partial

from sqlalchemy import Connection, update

from taskgate.composition import Services
from taskgate.store import queue
from taskgate.store import tasks as repo
from taskgate.store.tables import accounts
from tests.integration.taskrows import SECOND, T0, add_account, insert_tasks, make_task


def test_both_ways_of_counting_agree_with_the_claim_order(services: Services) -> None:
    rng = random.Random(7)
    owners = [add_account(services, f"acct{i}", concurrency=100) for i in range(5)]
    # Accounts served at different times, one never: their turns differ.
    for offset, owner in enumerate(owners[:3]):
        served = (
            update(accounts)
            .where(accounts.c.id == owner.id)
            .values(last_claim_at=T0 - (3 - offset) * SECOND)
        )
        services.db.write_sync(partial(Connection.execute, statement=served))
    new = [
        make_task(
            rng.choice(owners).id,
            priority=rng.choice([0, 0, 1]),
            created_at=T0 + i,
        )
        for i in range(60)
    ]
    insert_tasks(services, new)
    stored = [services.db.read_sync(partial(repo.get, task_id=t.id)) for t in new]

    positions = {}
    for task in stored:
        assert task is not None
        one = services.db.read_sync(partial(repo.queue_position, task=task))
        each = services.db.read_sync(partial(repo.queue_position, task=task, one_statement_scan=0))
        assert one == each
        positions[task.id] = one[0]

    # The claim, one task at a time, takes them in the order of their positions.
    order: list[str] = []
    while True:
        claimed = services.db.write_sync(
            lambda conn: queue.claim(
                conn,
                worker_id="wrk_order",
                queues=["default"],
                limit=1,
                now=T0 + (1000 + len(order)) * SECOND,
                lease_us=60 * SECOND,
            )
        )
        if not claimed:
            break
        order.append(claimed[0].id)
    assert len(order) == len(new)
    assert [positions[task_id] for task_id in order] == sorted(positions.values())
