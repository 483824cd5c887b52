"""PostgreSQL specifics: the URL, the driver (psycopg 3), and how connections are set up."""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from taskgate.store.prepared import (
    begin_deferred,
    commit_deferred,
    drop_deferred,
    flush_deferred,
)

#: A transaction left open this long by a stalled process is ended by the server: an
#: open transaction holds back the outbox's visibility horizon (see ``events``)
#: and vacuum.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
#: How long to wait for a new connection before the database counts as unavailable.
CONNECT_TIMEOUT_S = 5
#: How long a thread waits for a free connection of its process's pool.
POOL_TIMEOUT_S = 10
#: A connection whose server stops answering (a host gone, a network cut) is
#: given up after this long rather than waited on forever: TCP keepalives probe an
#: idle one, and unacknowledged data ends a busy one (``tcp_user_timeout``).
DEAD_PEER_TIMEOUT_MS = 15_000
#: A pooled connection unused for longer than this is pinged before it is used
#: again, so that the first call after a database restart gets a new connection
#: instead of failing on one the restart closed.
PING_AFTER_IDLE_S = 1.0


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def is_postgresql(url: str) -> bool:
    return url.partition("://")[0].split("+")[0] in ("postgresql", "postgres")


def normalise_url(url: str) -> str:
    """``postgresql://…`` (or ``postgres://…``) as SQLAlchemy names psycopg 3:
    ``postgresql+psycopg://…``. A URL naming another driver is refused."""
    scheme, sep, rest = url.partition("://")
    base, _, driver = scheme.partition("+")
    if base not in ("postgresql", "postgres") or not sep:
        raise ValueError(f"not a PostgreSQL URL: {make_url(url).render_as_string()}")
    if driver not in ("", "psycopg"):
        raise ValueError(f"taskgate talks to PostgreSQL through psycopg 3, not {driver!r}")
    return f"postgresql+psycopg://{rest}"


def engines(url: str, *, pool_size: int) -> tuple[Engine, Engine]:
    """The read engine and the write engine, on one pool of at most ``pool_size``
    connections (no overflow: the pool is the budget a process takes of the
    server's connections).

    The driver's connections are in autocommit mode. A read is one statement, one
    round trip. A write transaction begins with a ``BEGIN`` of ours, deferred
    (``store.prepared``) so that it goes in one pipeline with the transaction's
    first statement: psycopg's own ``BEGIN`` would cost a round trip of its own
    (it waits for the answer, also in a pipeline), on every transaction.

    Every wait is bounded, so that a database that is down or unreachable makes a
    caller fail fast (as unavailable) rather than hang: connecting, waiting for a
    pooled connection, and a peer that stopped answering. A pooled connection idle
    for a while is pinged before use (``PING_AFTER_IDLE_S``).
    """
    options = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    connect_args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "options": options,
        "application_name": "taskgate",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 5,
        "tcp_user_timeout": DEAD_PEER_TIMEOUT_MS,
    }
    created = create_engine(
        normalise_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        connect_args=connect_args,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        isolation_level="AUTOCOMMIT",
    )

    # SQLAlchemy's pre-ping would ping before every use: a round trip more for each
    # read. A connection back in the pool only moments ago is used as it is (if it
    # died meanwhile, the error invalidates it like any disconnect).
    @event.listens_for(created, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(created, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_S:
            return
        try:
            created.dialect.do_ping(dbapi_connection)
        except created.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out another (a new one).
            raise DisconnectionError(str(exc)) from exc

    # Deferred statements (store.prepared) go before any other statement, with the
    # COMMIT, or nowhere if the transaction rolls back.
    @event.listens_for(created, "before_cursor_execute")
    def _before_statement(conn: Connection, *_args: Any) -> None:
        flush_deferred(conn)

    @event.listens_for(created, "commit")
    def _commit(conn: Connection) -> None:
        commit_deferred(conn)

    @event.listens_for(created, "rollback")
    def _forget(conn: Connection) -> None:
        drop_deferred(conn)

    # Each engine's own "begin" (both are option engines of the one pool's).
    reads = created.execution_options()
    event.listen(reads, "begin", _forget)
    writes = created.execution_options()
    event.listen(writes, "begin", begin_deferred)
    return reads, writes
