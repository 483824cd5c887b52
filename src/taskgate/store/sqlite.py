"""SQLite specifics: how connections are set up."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event

log = logging.getLogger(__name__)

# The log file is cut back to this size after a checkpoint has emptied it.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    """An engine whose transactions begin as we say: ``BEGIN IMMEDIATE`` for
    writers (a write never upgrades from a read lock halfway, where SQLITE_BUSY
    would await it), autocommit statements for readers."""
    created = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=pool_size,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(created, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver: the begin event below
        # issues the BEGIN we want.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL: commits survive a crash of any process; only a power loss may
        # drop the commits since the last checkpoint.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # 32 MiB of page cache per connection (the default is 2 MiB): the claim and
        # task indexes of a deep queue stay in memory.
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        cursor.close()

    if immediate:

        @event.listens_for(created, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return created
