"""A cancel request that meets a worker's claim of the same task halfway: the
claim's transaction has taken the task but not committed when the cancel reads
it. The cancel waits for the claim and answers for the task as it then is
(running, asked to cancel), never with an internal error."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from taskgate.composition import Services
from taskgate.core.clock import now_us
from taskgate.core.states import TaskStatus
from taskgate.store import ledger, queue
from taskgate.store.db import Database
from tests.helpers import wait_until
from tests.integration.taskrows import (
    SECOND,
    add_account,
    event_rows,
    insert_tasks,
    make_task,
    running_by_account,
)


def test_cancel_waits_for_a_claim_in_flight(services: Services) -> None:
    if services.db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: a claim is never in flight")
    owner = add_account(services, "owner", concurrency=4)
    services.billing.grant(owner.id, "10")
    (task,) = insert_tasks(services, [make_task(owner.id, credits=1, created_at=now_us())])
    worker = Database(services.db.url, pool_size=1)
    try:
        with worker.write_engine.connect() as claiming:
            transaction = claiming.begin()
            claimed = queue.claim(
                claiming,
                worker_id="wrk_race",
                queues=["default"],
                limit=1,
                now=now_us(),
                lease_us=60 * SECOND,
            )
            assert [t.id for t in claimed] == [task.id]
            answered = threading.Event()

            def cancel() -> TaskStatus:
                view = asyncio.run(services.tasks.cancel(owner.id, task.id))
                answered.set()
                return view.task.status

            with ThreadPoolExecutor(max_workers=1) as pool:
                cancelling = pool.submit(cancel)
                wait_until(
                    lambda: _waiting_for_a_lock(services),
                    timeout=10,
                    message="the cancel to wait for the claim's row lock",
                )
                assert not answered.is_set()
                transaction.commit()
                status = cancelling.result(timeout=30)
    finally:
        worker.close()

    assert status is TaskStatus.RUNNING
    kinds = [e["type"] for e in event_rows(services, task.id)]
    assert kinds == ["task.created", "task.started", "task.cancel_requested"]
    stored, real, _ = running_by_account(services)
    assert stored == real == {owner.id: 1}
    assert services.db.write_sync(ledger.violations) == []


def _waiting_for_a_lock(services: Services) -> bool:
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(services.db.read_sync(lambda conn: conn.execute(query).scalar()))
