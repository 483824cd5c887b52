"""The database handle: engines, transactions, and how calls reach them.

Every write runs in one transaction on the process's single writer thread
(SQLite: ``BEGIN IMMEDIATE``, so a transaction never upgrades from read to write
and meets ``SQLITE_BUSY`` halfway). Reads run in autocommit mode: each statement
sees one consistent snapshot, a read made of several statements does not
(anything that must be consistent is read inside a write transaction). On SQLite
they run on the caller's thread: WAL readers never wait for the writer, so an
event loop may call them directly without stalling; on PostgreSQL, on a pool of
reader threads.

Driver errors that mean the database cannot serve right now (it is down,
restarting, refusing connections, a connection died, the pool is exhausted) become
:class:`~taskgate.core.errors.Unavailable` here, once: the API answers 503, the
background loops back off. A PostgreSQL transaction that lost a serialization
conflict or a deadlock is run again, a few times, before it too counts as
unavailable; a transaction function must therefore do nothing but its work on the
connection (nothing outside it that a second run would repeat).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from taskgate.core.errors import Unavailable
from taskgate.store import postgres, sqlite

T = TypeVar("T")

log = logging.getLogger(__name__)

#: SQLSTATEs of a transaction the server rolled back for a conflict with another
#: (serialization failure, deadlock): running it again is the remedy.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
#: Runs of such a transaction before the database counts as unavailable.
TRANSACTION_ATTEMPTS = 4


def _is_conflict(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def _unavailable(exc: Exception) -> bool:
    """Whether a driver error means the database cannot serve now (rather than a
    bug or a constraint): the caller gets :class:`Unavailable`."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, DBAPIError) and _is_conflict(exc):
        return Unavailable("The database is busy; try again.")
    return Unavailable("The database is unavailable.")


#: Results :meth:`Database.read_memo` keeps, the least recently used dropped first.
MEMO_ENTRIES = 4096


def _data_version(conn: Connection) -> int:
    # Straight on the driver: through SQLAlchemy the query would cost four times
    # as much.
    driver = conn.connection.driver_connection
    try:
        return int(driver.execute("PRAGMA data_version").fetchone()[0])  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            "PRAGMA data_version", None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc


class _Memo:
    """Read results, valid while the database is as it was when they were read.

    SQLite's ``PRAGMA data_version`` on a connection changes whenever another
    connection has committed since it was last asked; the kept reader never
    writes, so an unchanged version means an unchanged database. One query of a
    few microseconds stands in for reads that cost ten times that.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._version: int | None = None

    def clear(self) -> None:
        self._entries.clear()
        self._version = None

    def get(self, conn: Connection, key: Hashable, fn: Callable[[Connection], T]) -> T:
        version = _data_version(conn)
        entries = self._entries
        if version != self._version:
            entries.clear()
            self._version = version
        elif key in entries:
            entries.move_to_end(key)
            return entries[key]  # type: ignore[no-any-return]
        value = fn(conn)
        entries[key] = value
        if len(entries) > self._size:
            entries.popitem(last=False)
        return value


#: The connection type repositories take; services name it without importing SQLAlchemy.
Conn = Connection


class Database:
    """Engines for one database URL, with sync and async transaction helpers."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.read_engine = sqlite.engine(url, immediate=False, pool_size=pool_size)
            self.write_engine = sqlite.engine(url, immediate=True, pool_size=1)
        else:
            # One pool of ``pool_size`` connections for the process: the writer
            # thread and the reader threads, one fewer of them so that the writer
            # finds a connection free.
            # Reads in autocommit, as on SQLite: one round trip for a one-statement
            # read, instead of BEGIN, the query and COMMIT.
            self.read_engine, self.write_engine = postgres.engines(url, pool_size=pool_size)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskgate-writer")
        self._readers: ThreadPoolExecutor | None = (
            None
            if self.is_sqlite
            else ThreadPoolExecutor(
                max_workers=max(1, pool_size - 1), thread_name_prefix="taskgate-reader"
            )
        )
        self._closed = threading.Event()
        self._kept: Connection | None = None
        self._kept_lock = threading.Lock()
        self._memo = _Memo(MEMO_ENTRIES)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.read_engine.connect() as conn:
                return fn(conn)
        except (DBAPIError, PoolTimeout) as exc:
            if _unavailable(exc):
                raise _translate(exc) from exc
            raise

    def _read_kept(self, fn: Callable[[Connection], T], memo_key: Hashable = None) -> T:
        # Checking a connection out of the pool for every read costs more than the
        # read, so one reader connection is kept for whoever finds it free (in
        # practice the event loop's thread); anyone else uses the pool. SQLite
        # reads run in autocommit mode: the kept connection holds no snapshot.
        if not self._kept_lock.acquire(blocking=False):
            return self.read_sync(fn)
        try:
            if self._kept is None or self._kept.closed:
                self._kept = self.read_engine.connect()
                self._memo.clear()
            try:
                if memo_key is None:
                    return fn(self._kept)
                return self._memo.get(self._kept, memo_key, fn)
            except DBAPIError as exc:
                if _unavailable(exc):
                    raise _translate(exc) from exc
                raise
            finally:
                self._kept.rollback()
        finally:
            self._kept_lock.release()

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                with self.write_engine.begin() as conn:
                    return fn(conn)
            except (DBAPIError, PoolTimeout) as exc:
                if not _unavailable(exc):
                    raise
                if (
                    isinstance(exc, DBAPIError)
                    and _is_conflict(exc)
                    and attempt < TRANSACTION_ATTEMPTS
                ):
                    # The server rolled the transaction back: run it again after a
                    # short, random pause (so the two sides do not meet again).
                    log.info("transaction conflict (%s); running it again", exc.orig)
                    time.sleep(random.uniform(0.001, 0.01 * 2**attempt))
                    continue
                raise _translate(exc) from exc
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[Connection], T]) -> T:
        if self._readers is None:
            return self._read_kept(fn)
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read_sync, fn)

    async def read_memo(self, key: Hashable, fn: Callable[[Connection], T]) -> T:
        """Like :meth:`read`, for reads asked for again and again (a key, a polled
        task): on SQLite the result under ``key`` is kept and served again until any
        connection, of any process, commits a change to the database. ``fn``'s result
        is shared by every caller: nobody may change it."""
        if self._readers is None:
            return self._read_kept(fn, key)
        return await self.read(fn)

    async def write_nearby(self, fn: Callable[[Connection], T]) -> T:
        """Like :meth:`write`, but run on the calling thread.

        For a caller whose event loop has nothing better to do than wait for its
        write (the worker runtime, whose messages from executors and wake-ups wait
        in their pipes meanwhile). On SQLite handing a local transaction to
        another thread costs more than it takes. On PostgreSQL a worker's step is
        a few round trips, and the two hops (to the writer thread and back, each a
        GIL hand-over contended by the wake-up thread) cost more than they free:
        dispatch p50 fell from 7.8–8.4 ms to 6.4–7.0 ms when steps stayed on the
        loop. The wait is bounded: by the connect timeout when the database is
        away, and by the dead-peer timeout when it vanishes mid-statement.
        """
        return self.write_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, self.write_sync, fn)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._writer.shutdown(wait=True)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        if self._kept is not None:
            self._kept.close()
        self.read_engine.dispose()
        self.write_engine.dispose()
