"""The statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from taskgate.store.prepared import Prepared


class InsertUnlessConflict:
    """``INSERT … ON CONFLICT (…) WHERE … DO NOTHING`` in each dialect's words.

    A concurrent duplicate waits for the first transaction and then does nothing
    (it committed) or inserts (it rolled back), unlike a check-then-insert.
    """

    def __init__(
        self,
        table: Table,
        *,
        index_elements: Sequence[str],
        index_where: ColumnElement[bool] | None = None,
    ) -> None:
        self._by_dialect = {
            name: Prepared(
                module.insert(table).on_conflict_do_nothing(
                    index_elements=list(index_elements), index_where=index_where
                )
            )
            for name, module in (("sqlite", sqlite), ("postgresql", postgresql))
        }

    def execute(self, conn: Connection, **values: object) -> bool:
        """True if the row was inserted."""
        return bool(self._by_dialect[conn.dialect.name].execute(conn, **values))
