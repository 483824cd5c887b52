"""Lease recovery racing the late workers it recovers from, each on its own
connection: every task ends up with exactly one of the two outcomes, never both,
with one event per change and the running counts and credits exact."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from taskgate.composition import Services
from taskgate.core.models import Task
from taskgate.core.states import TaskStatus
from taskgate.store import ledger, queue
from taskgate.store.db import Database
from taskgate.store.queue import Finish
from tests.integration.taskrows import (
    SECOND,
    T0,
    add_account,
    event_rows,
    insert_tasks,
    lease_of,
    make_task,
    running_by_account,
)

TASKS = 60
LEASE = 2 * SECOND
LATE = T0 + 100 * SECOND  # every lease has run out by then


def test_recovery_and_late_finishes_never_both_apply(services: Services) -> None:
    owners = [add_account(services, f"acct{i}", concurrency=TASKS) for i in range(3)]
    for owner in owners:
        services.billing.grant(owner.id, "10")
    insert_tasks(
        services,
        [make_task(owners[i % 3].id, credits=7, max_attempts=1) for i in range(TASKS)],
    )
    claimed: list[Task] = services.db.write_sync(
        lambda conn: queue.claim(
            conn, worker_id="wrk_late", queues=["default"], limit=TASKS, now=T0, lease_us=LEASE
        )
    )
    assert len(claimed) == TASKS
    url = services.db.url
    start = threading.Barrier(3)

    def late_worker(batch: list[Task]) -> list[str]:
        db = Database(url, pool_size=1)
        try:
            start.wait(timeout=30)
            done: list[str] = []
            # Small batches, in the order the worker happens to hold them.
            for offset in range(0, len(batch), 3):
                outcomes = [
                    Finish(lease_of(t), TaskStatus.COMPLETED, output=[], charge=5)
                    for t in batch[offset : offset + 3]
                ]
                changed = db.write_sync(partial(queue.finish_many, outcomes=outcomes, now=LATE))
                done.extend(t.id for t in changed)
            return done
        finally:
            db.close()

    def recoverer() -> list[str]:
        db = Database(url, pool_size=1)
        try:
            start.wait(timeout=30)
            done: list[str] = []
            while True:
                changed = db.write_sync(lambda conn: queue.recover_expired(conn, LATE, 1, batch=7))
                if not changed:
                    return done
                done.extend(t.id for t in changed)
        finally:
            db.close()

    # Two late workers finish halves of the tasks, in opposite orders.
    halves = [claimed[::2], list(reversed(claimed[1::2]))]
    with ThreadPoolExecutor(max_workers=3) as pool:
        finishing = [pool.submit(late_worker, half) for half in halves]
        recovering = pool.submit(recoverer)
        finished = [task_id for f in finishing for task_id in f.result(timeout=60)]
        recovered = recovering.result(timeout=60)

    assert not set(finished) & set(recovered), "a task was both finished and recovered"
    # A task the recoverer skipped while a worker held it was finished by that worker.
    assert sorted(finished + recovered) == sorted(t.id for t in claimed)
    for task in claimed:
        kinds = [e["type"] for e in event_rows(services, task.id)]
        assert kinds[:2] == ["task.created", "task.started"]
        assert kinds[2:] in (["task.completed"], ["task.failed"]), kinds
    statuses = Counter(
        e["type"] for e in event_rows(services) if e["type"] not in ("task.created", "task.started")
    )
    expected = Counter({"task.completed": len(finished), "task.failed": len(recovered)})
    assert statuses == +expected
    stored, real, _ = running_by_account(services)
    assert stored == real == {o.id: 0 for o in owners}
    assert services.db.write_sync(ledger.violations) == []
