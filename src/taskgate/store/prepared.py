"""Statements compiled once per dialect and run on the driver's cursor.

For the hot paths only (authenticating a key, reading a task, submitting,
claiming, finishing): there SQLAlchemy's per-execution work — building the
statement, its cache key, the execution context — costs several times the query
itself (about 150 µs against 15 µs for a read by primary key on SQLite). The
statement is still built with SQLAlchemy from the same table definitions and
compiled by the connection's dialect, with its type processors (JSON) applied;
only execution goes straight to the driver.

Parameters are named with ``bindparam``; other literals in the statement keep
the values they were built with. Expanding ``IN`` lists are not supported.

Statements whose results nobody reads (an event row, a counter) may be deferred
(:meth:`Prepared.defer`): on PostgreSQL they are sent with the transaction's next
statement, or with its ``COMMIT``, in one pipeline, instead of costing a round
trip each; elsewhere they run at once. The transaction's ``BEGIN`` is deferred
the same way (:func:`begin_deferred`), so a transaction takes a round trip for
each statement whose rows it needs, plus the commit.
:func:`flush_deferred` (run before any other statement, by the engine's events)
and :func:`commit_deferred` keep them in order with everything else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

_MISSING = object()
# Where a connection keeps its deferred statements: (sql, parameter sets) each.
_DEFERRED = "taskgate.deferred"

Deferred = list[tuple[str, list[Any]]]
_BEGIN: tuple[str, list[Any]] = ("BEGIN", [None])


def _take_deferred(conn: Connection) -> Deferred | None:
    deferred: Deferred | None = conn.info.pop(_DEFERRED, None)
    return deferred


def begin_deferred(conn: Connection) -> None:
    """Begin a transaction with its first statement: ``BEGIN`` is the first
    deferred statement (anything left from an earlier transaction on the same
    connection is forgotten). For a connection the driver keeps in autocommit
    mode, where the ``BEGIN`` is ours to send."""
    conn.info[_DEFERRED] = [_BEGIN]


def drop_deferred(conn: Connection) -> None:
    """Forget what was deferred (the transaction ends without it: a rollback)."""
    if conn.invalidated:
        return  # the driver's connection is gone (and the next begin forgets it)
    conn.info.pop(_DEFERRED, None)


@contextlib.contextmanager
def _driver_errors(conn: Connection, sql: str, cursor: Any = None) -> Iterator[None]:
    """Driver errors come out as SQLAlchemy's, as from ``Connection.execute``, and a
    connection found dead is invalidated, so that the pool drops it rather than
    reusing it."""
    dialect = conn.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, dialect.loaded_dbapi.Error, dialect=dialect, connection_invalidated=lost
        ) from exc


@contextlib.contextmanager
def _pipeline(conn: Connection, deferred: Deferred) -> Iterator[Any]:
    """A psycopg pipeline that first sends ``deferred``; what the block sends goes
    with it. Leaving the block sends it all and reads every result: one round trip
    (results are read from the cursors after the block)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    cursors = []
    try:
        with driver.pipeline():
            for sql, arg_sets in deferred:
                cursor = driver.cursor()
                cursors.append(cursor)
                if len(arg_sets) == 1:
                    cursor.execute(sql, arg_sets[0])
                else:
                    cursor.executemany(sql, arg_sets)
            yield driver
    finally:
        for cursor in cursors:
            cursor.close()


def flush_deferred(conn: Connection) -> None:
    """Send the deferred statements now (before a statement that does not go
    through :class:`Prepared`)."""
    deferred = _take_deferred(conn)
    if deferred:
        with _driver_errors(conn, deferred[0][0]), _pipeline(conn, deferred):
            pass


def commit_deferred(conn: Connection) -> None:
    """Send the deferred statements with the ``COMMIT``: one round trip. The driver
    is then outside a transaction, and its own commit that follows has nothing
    to do. A transaction that sent nothing, not even its ``BEGIN``, has nothing
    to commit."""
    deferred = _take_deferred(conn)
    if deferred and deferred != [_BEGIN]:
        with _driver_errors(conn, "COMMIT"), _pipeline(conn, deferred) as driver:
            driver.execute("COMMIT")


class _Plan:
    __slots__ = (
        "_columns",
        "_dialect",
        "binds",
        "deferrable",
        "names",
        "plain",
        "positional",
        "processed",
        "sql",
    )

    def __init__(self, stmt: Any, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        names = list(compiled.positiontup or []) if self.positional else list(compiled.binds)
        # Per parameter, in the order the driver takes them: its name, its default
        # (the literal it was built with, or missing), its type's bind processor.
        self.binds: list[tuple[str, Any, Callable[[Any], Any] | None]] = []
        for name in names:
            bind = compiled.binds[name]
            default = _MISSING if bind.required else bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.binds.append((name, default, processor))
        columns = list(getattr(stmt, "selected_columns", None) or [])
        if not columns:
            columns = list(getattr(stmt, "_returning", ()) or [])
            columns = [c for entry in columns for c in getattr(entry, "columns", [entry])]
        self.names = [str(column.key) for column in columns]
        self._dialect = dialect
        # Whether statements are deferred on this dialect (see Prepared.defer).
        self.deferrable = dialect.name == "postgresql"
        self._columns = columns
        # Columns read as they come, and those a processor turns into values (JSON);
        # known once the driver has said what types it returns (the first result).
        self.plain: list[int] | None = None
        self.processed: list[tuple[int, Callable[[Any], Any]]] = []

    def learn_types(self, description: Sequence[Any] | None) -> None:
        """Choose the result processors by the types the driver reported (SQLite's
        driver reports none; PostgreSQL's, each column's type oid)."""
        dialect = self._dialect
        codes = [d[1] for d in description or ()] or [None] * len(self._columns)
        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, code)
            for column, code in zip(self._columns, codes, strict=True)
        ]
        self.processed = [(i, p) for i, p in enumerate(processors) if p is not None]
        self.plain = [i for i, p in enumerate(processors) if p is None]

    def args(self, params: dict[str, Any]) -> Any:
        values = []
        for name, default, processor in self.binds:
            value = params.get(name, default)
            if value is _MISSING:
                raise KeyError(f"missing parameter {name!r}")
            if processor is not None and value is not None:
                value = processor(value)
            values.append(value)
        if self.positional:
            return values
        return {name: value for (name, _, _), value in zip(self.binds, values, strict=True)}

    def row(self, values: Sequence[Any]) -> dict[str, Any]:
        names = self.names
        row = {names[i]: values[i] for i in self.plain or ()}
        for i, processor in self.processed:
            value = values[i]
            row[names[i]] = processor(value) if value is not None else None
        return row


class Prepared:
    """A statement with named bind parameters, e.g. ``prepared.first(conn, id=…)``."""

    def __init__(self, stmt: Executable) -> None:
        self._stmt = stmt
        self._plans: dict[str, _Plan] = {}

    @property
    def statement(self) -> Executable:
        """The statement as built."""
        return self._stmt

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = _Plan(self._stmt, dialect)
        return plan

    @staticmethod
    @contextlib.contextmanager
    def _cursor(conn: Connection, plan: _Plan) -> Iterator[Any]:
        """A driver cursor (see :func:`_driver_errors`)."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with _driver_errors(conn, plan.sql, cursor):
                yield cursor
        finally:
            cursor.close()

    @staticmethod
    def _send(conn: Connection, plan: _Plan, send: Callable[[], None]) -> None:
        """Run ``send`` (which executes on a cursor) after the deferred statements,
        in their round trip."""
        deferred = _take_deferred(conn) if plan.deferrable else None
        if not deferred:
            send()
            return
        with _pipeline(conn, deferred):
            send()

    def all(self, conn: Connection, **params: Any) -> list[dict[str, Any]]:
        plan = self._plan(conn.dialect)
        with self._cursor(conn, plan) as cursor:
            self._send(conn, plan, lambda: cursor.execute(plan.sql, plan.args(params)))
            rows = cursor.fetchall()
            if plan.plain is None:
                plan.learn_types(cursor.description)
            return [plan.row(values) for values in rows]

    def all_many(
        self, conn: Connection, params: Sequence[dict[str, Any]]
    ) -> list[list[dict[str, Any]]]:
        """Run the statement once per parameter set; each run's rows, in order. On
        PostgreSQL the runs go in one pipeline: one round trip for all of them."""
        if conn.dialect.name != "postgresql":
            return [self.all(conn, **one) for one in params]
        if not params:
            return []
        plan = self._plan(conn.dialect)
        results: list[list[dict[str, Any]]] = []
        with self._cursor(conn, plan) as cursor:
            arg_sets = [plan.args(one) for one in params]
            self._send(conn, plan, lambda: cursor.executemany(plan.sql, arg_sets, returning=True))
            while True:
                if plan.plain is None:
                    plan.learn_types(cursor.description)
                results.append([plan.row(values) for values in cursor.fetchall()])
                if not cursor.nextset():
                    return results

    def first(self, conn: Connection, **params: Any) -> dict[str, Any] | None:
        rows = self.all(conn, **params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, **params: Any) -> Any:
        row = self.first(conn, **params)
        return next(iter(row.values())) if row else None

    def execute(self, conn: Connection, **params: Any) -> int:
        """Run a statement without results; the number of rows it changed."""
        plan = self._plan(conn.dialect)
        with self._cursor(conn, plan) as cursor:
            self._send(conn, plan, lambda: cursor.execute(plan.sql, plan.args(params)))
            return int(cursor.rowcount)

    def execute_many(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        plan = self._plan(conn.dialect)
        arg_sets = [plan.args(row) for row in rows]
        with self._cursor(conn, plan) as cursor:
            self._send(conn, plan, lambda: cursor.executemany(plan.sql, arg_sets))

    def defer(self, conn: Connection, **params: Any) -> None:
        """Run the statement later in this transaction, for a statement whose
        results nobody reads: on PostgreSQL it is sent with the next statement or
        the commit (see the module's docstring); elsewhere it runs now."""
        self.defer_many(conn, [params])

    def defer_many(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """:meth:`defer` for each parameter set, in order."""
        if not rows:
            return
        plan = self._plan(conn.dialect)
        if not plan.deferrable:
            self.execute_many(conn, rows)
            return
        deferred: Deferred = conn.info.setdefault(_DEFERRED, [])
        deferred.append((plan.sql, [plan.args(row) for row in rows]))
