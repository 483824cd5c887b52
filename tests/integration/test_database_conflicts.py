"""PostgreSQL transactions that lose a deadlock or a serialization conflict are run
again; one that keeps losing, or a database that cannot be reached, is
``Unavailable`` (503), never an internal error."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import DataError

from taskgate.core.errors import Unavailable
from taskgate.store.db import TRANSACTION_ATTEMPTS, Database
from taskgate.store.tables import outbox_cursors
from tests.databases import PostgresServer


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[Database]:
    url = postgres_server.create()
    db = Database(url, pool_size=3)
    try:
        yield db
    finally:
        db.close()
        postgres_server.drop(url)


def test_the_loser_of_a_deadlock_runs_again_and_both_commit(pg: Database) -> None:
    pg.write_sync(
        lambda conn: conn.execute(
            insert(outbox_cursors), [{"name": "a", "position": 0}, {"name": "b", "position": 0}]
        )
    )
    both_hold_one = threading.Barrier(2, timeout=10)
    runs = {"ab": 0, "ba": 0}

    def bump(order: str) -> None:
        def write(conn: Connection) -> None:
            runs[order] += 1
            first, second = order[0], order[1]
            conn.execute(
                update(outbox_cursors)
                .where(outbox_cursors.c.name == first)
                .values(position=outbox_cursors.c.position + 1)
            )
            if runs[order] == 1:
                both_hold_one.wait()
            conn.execute(
                update(outbox_cursors)
                .where(outbox_cursors.c.name == second)
                .values(position=outbox_cursors.c.position + 1)
            )

        pg.write_sync(write)

    threads = [threading.Thread(target=bump, args=(order,)) for order in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(runs.values()) == [1, 2]  # one was chosen as the deadlock's victim
    positions = pg.read_sync(
        lambda conn: {
            row.name: row.position
            for row in conn.execute(select(outbox_cursors.c.name, outbox_cursors.c.position))
        }
    )
    assert (positions["a"], positions["b"]) == (2, 2)


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_a_transaction_that_keeps_conflicting_is_unavailable(pg: Database, sqlstate: str) -> None:
    runs = 0

    def write(conn: Connection) -> None:
        nonlocal runs
        runs += 1
        conn.exec_driver_sql(
            f"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{sqlstate}'; END $$"
        )

    with pytest.raises(Unavailable) as raised:
        pg.write_sync(write)
    assert raised.value.code == "unavailable" and raised.value.status == 503
    assert runs == TRANSACTION_ATTEMPTS


def test_other_errors_are_neither_retried_nor_unavailable(pg: Database) -> None:
    runs = 0

    def write(conn: Connection) -> None:
        nonlocal runs
        runs += 1
        conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION 'bug' USING ERRCODE = '22012'; END $$")

    with pytest.raises(DataError, match="bug"):
        pg.write_sync(write)
    assert runs == 1


def test_an_unreachable_database_is_unavailable_promptly() -> None:
    # Nothing listens on port 1 of the loopback address: refused at once.
    db = Database("postgresql://postgres@127.0.0.1:1/none", pool_size=1)
    try:
        with pytest.raises(Unavailable):
            db.read_sync(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
        with pytest.raises(Unavailable):
            db.write_sync(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
    finally:
        db.close()
