"""Deferred statements (``Prepared.defer``): on PostgreSQL sent with the next
statement or the commit, on SQLite at once. Either way the transaction reads what
it deferred, in order, and keeps it only if it commits."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from taskgate.composition import Services
from taskgate.store.prepared import Prepared
from taskgate.store.tables import outbox_cursors

_ADD = Prepared(
    insert(outbox_cursors).values(name=bindparam("name"), position=bindparam("position"))
)
_NAMES = ("a", "b", "c", "d", "last", "gone", "kept", "taken", "fresh", "after")
_READ = Prepared(
    select(outbox_cursors.c.position).where(outbox_cursors.c.name == bindparam("name"))
)


def _stored(services: Services) -> dict[str, int]:
    """The rows these tests wrote (the table also holds the outbox's own cursors)."""

    def read(conn: Connection) -> dict[str, int]:
        rows = conn.execute(select(outbox_cursors).where(outbox_cursors.c.name.in_(_NAMES)))
        return {row.name: row.position for row in rows}

    return services.db.read_sync(read)


def test_what_a_transaction_deferred_is_what_it_reads_next(services: Services) -> None:
    def write(conn: Connection) -> tuple[int, int]:
        _ADD.defer(conn, name="a", position=1)
        _ADD.defer_many(conn, [{"name": "b", "position": 1}, {"name": "c", "position": 1}])
        # A statement of SQLAlchemy's own sends them first...
        conn.execute(
            update(outbox_cursors)
            .where(outbox_cursors.c.name == "a")
            .values(position=outbox_cursors.c.position + 1)
        )
        _ADD.defer(conn, name="d", position=4)
        # ...and so does a prepared one, in the same round trip.
        return _READ.scalar(conn, name="a"), _READ.scalar(conn, name="d")

    assert services.db.write_sync(write) == (2, 4)
    assert _stored(services) == {"a": 2, "b": 1, "c": 1, "d": 4}


def test_deferred_statements_left_at_the_end_go_with_the_commit(services: Services) -> None:
    def write(conn: Connection) -> None:
        _ADD.defer(conn, name="last", position=7)

    services.db.write_sync(write)
    assert _stored(services) == {"last": 7}


def test_a_rolled_back_transaction_leaves_nothing_deferred_behind(services: Services) -> None:
    class Abandon(Exception):
        pass

    def abandoned(conn: Connection) -> None:
        _ADD.defer(conn, name="gone", position=1)
        raise Abandon

    with pytest.raises(Abandon):
        services.db.write_sync(abandoned)
    # The next transaction (on the same pooled connection) does not send it either.
    services.db.write_sync(lambda conn: _ADD.defer(conn, name="kept", position=2))
    assert _stored(services) == {"kept": 2}


def test_a_failing_deferred_statement_fails_its_transaction(services: Services) -> None:
    services.db.write_sync(lambda conn: _ADD.defer(conn, name="taken", position=1))

    def clash(conn: Connection) -> None:
        conn.execute(insert(outbox_cursors).values(name="fresh", position=1))
        _ADD.defer(conn, name="taken", position=2)  # the primary key is taken

    with pytest.raises(IntegrityError):
        services.db.write_sync(clash)
    assert _stored(services) == {"taken": 1}
    # The connection is fine for the next transaction.
    services.db.write_sync(lambda conn: _ADD.defer(conn, name="after", position=3))
    assert _stored(services) == {"taken": 1, "after": 3}


def test_a_write_transaction_is_read_committed_and_one_transaction(services: Services) -> None:
    if services.db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite's write transactions are BEGIN IMMEDIATE")

    def write(conn: Connection) -> tuple[str, str]:
        _ADD.defer(conn, name="a", position=1)
        level = conn.exec_driver_sql("SHOW transaction_isolation").scalar_one()
        # The deferred insert went out with that statement, in the same transaction.
        xid = conn.exec_driver_sql("SELECT txid_current_if_assigned()::text").scalar_one()
        return level, xid

    level, xid = services.db.write_sync(write)
    assert level == "read committed"
    assert xid is not None  # the insert before it has its transaction id
    services.db.write_sync(lambda conn: None)  # a transaction that sends nothing
    assert _stored(services) == {"a": 1}


@pytest.mark.parametrize("first", ["sqlalchemy", "prepared"])
def test_statements_sent_before_a_failure_are_rolled_back(services: Services, first: str) -> None:
    """On PostgreSQL the driver is in autocommit mode and a write transaction's
    ``BEGIN`` goes with its first statement: that statement is in the transaction,
    whichever way it is sent."""

    class Abandon(Exception):
        pass

    def abandoned(conn: Connection) -> None:
        if first == "sqlalchemy":
            conn.execute(insert(outbox_cursors).values(name="gone", position=1))
        else:
            _ADD.execute(conn, name="gone", position=1)
        assert _READ.scalar(conn, name="gone") == 1  # it was sent
        raise Abandon

    with pytest.raises(Abandon):
        services.db.write_sync(abandoned)
    assert _stored(services) == {}


def test_an_unflushed_commit_is_the_one_transactions_only(services: Services) -> None:
    """``queue.commit_unflushed`` turns off the WAL flush of one transaction's commit
    (PostgreSQL; a no-op on SQLite), which still commits what it wrote."""
    from taskgate.store import queue

    def write(conn: Connection) -> str | None:
        queue.commit_unflushed(conn)
        _ADD.defer(conn, name="a", position=1)
        if services.db.is_sqlite:
            return None
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())

    def setting(conn: Connection) -> str:
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())

    inside = services.db.write_sync(write)
    assert _stored(services) == {"a": 1}
    if services.db.is_sqlite:
        return
    assert inside == "off"
    # The next transactions, on the pooled connection (the pool keeps reusing it),
    # flush again.
    for _ in range(3):
        assert services.db.write_sync(setting) == "on"
