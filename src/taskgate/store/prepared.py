"""Statements compiled once per dialect and run on the driver's cursor.

For the hottest reads only (authenticating a key, reading a task by id): there,
SQLAlchemy's per-execution work costs several times the query itself (about
150 µs against 15 µs on SQLite). The statement is still built with SQLAlchemy,
from the same table definitions, and compiled by the connection's dialect; only
execution skips the ORM-free but still heavy execution context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine.interfaces import Dialect


class _Plan:
    __slots__ = ("names", "order", "processors", "sql")

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.order: list[str] | None = (
            list(compiled.positiontup or []) if compiled.positional else None
        )
        columns = list(stmt.selected_columns)
        self.names = [str(column.key) for column in columns]
        self.processors: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]


class Prepared:
    """A SELECT with named bind parameters, run as ``prepared.first(conn, name=value)``."""

    def __init__(self, stmt: Select[Any]) -> None:
        self._stmt = stmt
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = _Plan(self._stmt, dialect)
        return plan

    def _rows(
        self, conn: Connection, params: dict[str, Any], limit: int | None
    ) -> list[dict[str, Any]]:
        plan = self._plan(conn.dialect)
        args: Any = tuple(params[name] for name in plan.order) if plan.order is not None else params
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(plan.sql, args)
            raw = cursor.fetchmany(limit) if limit is not None else cursor.fetchall()
        finally:
            cursor.close()
        rows = []
        for values in raw:
            row = {}
            for name, processor, value in zip(plan.names, plan.processors, values, strict=True):
                row[name] = (
                    processor(value) if processor is not None and value is not None else value
                )
            rows.append(row)
        return rows

    def first(self, conn: Connection, **params: Any) -> dict[str, Any] | None:
        rows = self._rows(conn, params, 1)
        return rows[0] if rows else None

    def all(self, conn: Connection, **params: Any) -> list[dict[str, Any]]:
        return self._rows(conn, params, None)
