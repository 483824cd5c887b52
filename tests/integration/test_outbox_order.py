"""Following the outbox by position misses nothing, even when transactions commit
in another order than they started, and hands a task's events in seq order.

On PostgreSQL a transaction that took its id (or any sequence value) early may
commit after a younger one: a reader that moved past the younger one's event must
still be handed the older one's. On SQLite writers take turns, so the same tests
check the rowid order.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from functools import partial

import pytest
from sqlalchemy import Connection, bindparam, func, select, update

from taskgate.composition import Services
from taskgate.core.models import Event, Task
from taskgate.services.events import EventHub
from taskgate.store import events
from taskgate.store.db import Database
from taskgate.store.tables import events as outbox
from taskgate.store.tables import tasks
from tests.integration.taskrows import T0, add_account, insert_tasks, make_task

DEADLINE = 30.0


def _postgresql_only(services: Services) -> None:
    if services.db.is_sqlite:
        pytest.skip("SQLite writers cannot overlap: one waits for the other to commit")


_BUMP = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"))
    .values(event_seq=tasks.c.event_seq + 1)
    .returning(tasks)
)


def _change(conn: Connection, task_id: str, now: int) -> Task:
    """What every task change does: update the task's row (which orders changes of
    one task), then record its event."""
    row = conn.execute(_BUMP, {"task_id": task_id}).mappings().one()
    task = Task.from_mapping(row)
    events.append(conn, [task], "task.progress", now)
    return task


def _tail_all(db: Database, after: int) -> list[tuple[int, Event]]:
    return db.read_sync(lambda conn: events.tail(conn, after, limit=100_000))


def _tail_once_visible(db: Database, after: int, count: int) -> list[tuple[int, Event]]:
    """The events after ``after`` once ``count`` of them are handed out. The horizon
    is the whole server's: a transaction of another database on it (the rest of
    the suite runs beside these tests) holds committed events back until it ends."""
    deadline = time.monotonic() + DEADLINE
    while len(seen := _tail_all(db, after)) < count:
        assert time.monotonic() < deadline, f"{len(seen)} of {count} events handed out"
        time.sleep(0.01)
    return seen


def _last_position(db: Database) -> int:
    """The largest position in this test's database, visible to readers or not:
    every event written from here on has a larger one."""
    if db.is_sqlite:
        return db.read_sync(events.head)  # the rowid: no horizon
    highest = select(func.max(outbox.c.position))
    return int(db.read_sync(lambda conn: conn.execute(highest).scalar()) or 0)


def test_an_event_that_commits_late_is_not_skipped(services: Services) -> None:
    _postgresql_only(services)
    account = add_account(services, "acme")
    older, younger = insert_tasks(services, [make_task(account.id) for _ in range(2)])
    db = services.db
    start = _last_position(db)

    with db.write_engine.connect() as slow, db.write_engine.connect() as fast:
        slow_tx = slow.begin()
        _change(slow, older.id, T0)  # takes its transaction id first...
        with fast.begin():
            _change(fast, younger.id, T0)  # ... and commits second
        seen = _tail_all(db, start)
        # The younger change is committed, but handing it out now would move the
        # reader past the older one's position.
        assert seen == []
        assert db.read_sync(events.head) <= start
        slow_tx.commit()

    seen = _tail_once_visible(db, start, 2)
    assert [(e.task_id, e.seq) for _, e in seen] == [(older.id, 2), (younger.id, 2)]
    positions = [p for p, _ in seen]
    assert positions == sorted(positions)
    assert db.read_sync(events.head) == positions[-1]
    for_account = db.read_sync(lambda conn: events.for_account(conn, account.id, None))
    assert [p for p, _ in for_account if p > start] == positions


def test_a_hub_reads_held_back_events_soon_after_the_older_transaction_ends(
    services: Services,
) -> None:
    """The end of the transaction that held events back wakes nobody: the hub,
    having found events held back, reads again within moments rather than at its
    next poll (here far beyond the test's deadline)."""
    _postgresql_only(services)
    account = add_account(services, "acme")
    older, younger = insert_tasks(services, [make_task(account.id) for _ in range(2)])
    db = services.db
    hub = EventHub(db, poll_interval=3600)

    async def scenario() -> list[Event]:
        hub.start()
        received: list[Event] = []
        try:
            async with hub.account_events(account.id, None) as stream:
                with db.write_engine.connect() as slow, db.write_engine.connect() as fast:
                    slow_tx = slow.begin()
                    _change(slow, older.id, T0)  # takes its transaction id first
                    with fast.begin():
                        _change(fast, younger.id, T0)  # committed, but held back
                    hub.notify()
                    # The hub has read (nothing it may hand out) when the older one ends.
                    deadline = time.monotonic() + DEADLINE
                    while hub._held_timer is None:
                        assert time.monotonic() < deadline, "the hub never saw them held back"
                        await asyncio.sleep(0.01)
                    slow_tx.commit()
                # The inserts' events may come first: the stream starts where the hub
                # is, which other transactions on the server can hold back.
                async with asyncio.timeout(DEADLINE):
                    async for batch in stream:
                        received.extend(batch)
                        if {(e.task_id, e.seq) for e in received} >= changes:
                            break
        finally:
            await hub.stop()
        return received

    changes = {(older.id, 2), (younger.id, 2)}
    received = asyncio.run(scenario())
    assert sorted((e.task_id, e.seq) for e in received if e.seq == 2) == sorted(changes)


def test_a_task_s_events_keep_their_order_across_transactions(services: Services) -> None:
    """A transaction that took its id early writes a task's next event after a
    younger transaction committed the task's previous one: positions still follow
    the task's seq."""
    _postgresql_only(services)
    account = add_account(services, "acme")
    first, shared = insert_tasks(services, [make_task(account.id) for _ in range(2)])
    db = services.db
    start = _last_position(db)
    with db.write_engine.connect() as early, db.write_engine.connect() as late:
        early_tx = early.begin()
        _change(early, first.id, T0)  # the early transaction's id is taken here
        with late.begin():
            _change(late, shared.id, T0)  # seq 2 of the shared task, younger id
        _change(early, shared.id, T0)  # seq 3, written by the older transaction
        early_tx.commit()
    seen = _tail_once_visible(db, start, 3)
    order = [(e.task_id, e.seq) for _, e in seen if e.task_id == shared.id]
    assert order == [(shared.id, 2), (shared.id, 3)]


def test_concurrent_writers_and_a_reader_miss_nothing(services: Services) -> None:
    """Writers change random tasks in transactions held open until the reader has
    read at least once more; the reader, following from its last position, gets
    every event exactly once, positions rising, each task's events in seq order."""
    account = add_account(services, "acme")
    made = insert_tasks(services, [make_task(account.id) for _ in range(6)])
    task_ids = sorted(t.id for t in made)
    url = services.db.url
    start = _last_position(services.db)
    reads = threading.Condition()
    read_count = [0]
    stop = threading.Event()
    errors: list[BaseException] = []
    written: list[tuple[str, int]] = []
    written_lock = threading.Lock()

    def after_next_read() -> None:
        """Return once the reader has read again (a transaction held open across it)."""
        with reads:
            target = read_count[0] + 1
            if not reads.wait_for(lambda: read_count[0] >= target or stop.is_set(), DEADLINE):
                raise AssertionError("the reader stopped reading")

    def write(conn: Connection, *, chosen: list[str], holds: list[bool]) -> list[Task]:
        changed = []
        for task_id, hold in zip(chosen, holds, strict=True):
            changed.append(_change(conn, task_id, T0))
            if hold:
                after_next_read()
        return changed

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        db = Database(url, pool_size=1)
        try:
            for _ in range(15):
                chosen = sorted(rng.sample(task_ids, rng.randint(1, 3)))
                holds = [rng.random() < 0.5 for _ in chosen]
                changed = db.write_sync(partial(write, chosen=chosen, holds=holds))
                with written_lock:
                    written.extend((t.id, t.event_seq) for t in changed)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    received: list[tuple[int, Event]] = []

    def reader() -> None:
        db = Database(url, pool_size=1)
        position = start
        finished_by = time.monotonic() + DEADLINE
        try:
            while True:
                finished = stop.is_set()
                batch = db.read_sync(partial(events.tail, after=position, limit=7))
                received.extend(batch)
                if batch:
                    position = batch[-1][0]
                with reads:
                    read_count[0] += 1
                    reads.notify_all()
                # Once the writers are done, read until every event written is
                # handed out (held back while another database's transaction
                # holds the horizon), or until a deadline shows one never is.
                if finished and not batch:
                    if len(received) >= len(written) or time.monotonic() > finished_by:
                        return
                elif not finished:
                    finished_by = time.monotonic() + DEADLINE
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            db.close()

    reading = threading.Thread(target=reader, daemon=True)
    writers = [threading.Thread(target=writer, args=(seed,), daemon=True) for seed in range(4)]
    reading.start()
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + DEADLINE
    for thread in writers:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in writers), "the writers did not finish in time"
    stop.set()
    reading.join(DEADLINE)
    assert not reading.is_alive()
    assert not errors, errors

    got = [(e.task_id, e.seq) for _, e in received]
    assert len(got) == len(set(got)), "an event was handed out twice"
    assert sorted(got) == sorted(written), "an event was missed"
    positions = [p for p, _ in received]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    by_task: dict[str, list[int]] = defaultdict(list)
    for task_id, seq in got:
        by_task[task_id].append(seq)
    for task_id, seqs in by_task.items():
        assert seqs == list(range(2, 2 + len(seqs))), task_id
