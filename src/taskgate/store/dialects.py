"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_or_ignore(
    conn: Connection,
    table: Table,
    values: dict[str, Any],
    *,
    index_elements: list[str],
    index_where: ColumnElement[bool] | None = None,
) -> bool:
    """Insert a row unless it conflicts on the given unique index; True if inserted.

    A concurrent duplicate waits for the first transaction and then does nothing
    (it committed) or inserts (it rolled back), unlike a check-then-insert.
    """
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        module.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=index_elements, index_where=index_where)
    )
    return bool(conn.execute(stmt).rowcount)
