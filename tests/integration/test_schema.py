"""The schema the migrations build is the schema the code declares.

Alembic's autogenerate comparison sees tables, columns, types, nullability, unique
constraints and index columns, but not the sort order of an index column
(``priority DESC``), a partial index's WHERE clause, or CHECK constraints. Those are
compared here on their own: each index's DDL as SQLAlchemy compiles it from the
table definitions against the DDL SQLite stored, and the CHECK constraints by name
and text.
"""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect
from sqlalchemy.schema import CreateIndex

from taskgate.composition import Services
from taskgate.store import migrate
from taskgate.store.tables import metadata


def _normalise(ddl: str) -> str:
    ddl = re.sub(r'["`\[\]]', "", ddl)
    ddl = re.sub(r"\s+", " ", ddl).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", ddl).lower()


def test_autogenerate_finds_no_difference(services: Services) -> None:
    assert migrate.is_up_to_date(services.db)
    with services.db.write_engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_every_index_is_built_as_declared(services: Services) -> None:
    """Index by index, including sort order and partial-index conditions."""
    with services.db.write_engine.connect() as conn:
        stored = {
            name: _normalise(sql)
            for name, sql in conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        declared = {
            str(index.name): _normalise(str(CreateIndex(index).compile(dialect=conn.dialect)))
            for table in metadata.sorted_tables
            for index in table.indexes
        }
    assert set(stored) == set(declared)
    for name, ddl in declared.items():
        assert stored[name] == ddl, name
    # The comparison is not vacuous: the claim index's descending column and the
    # partial conditions are part of what was compared.
    assert "priority desc" in declared["ix_tasks_claim"]
    assert "where status = 'queued'" in declared["ix_tasks_claim"]
    assert "where status = 'running'" in declared["ix_tasks_lease"]


def test_check_constraints_are_built_as_declared(services: Services) -> None:
    def declared(table: Any) -> dict[str, str]:
        return {
            str(c.name): _normalise(str(c.sqltext))
            for c in table.constraints
            if isinstance(c, CheckConstraint)
        }

    with services.db.write_engine.connect() as conn:
        inspector = inspect(conn)
        for table in metadata.sorted_tables:
            stored = {
                c["name"]: _normalise(c["sqltext"])
                for c in inspector.get_check_constraints(table.name)
            }
            assert stored == declared(table), table.name
    assert declared(metadata.tables["tasks"])  # there is something to compare


def test_normalisation_tells_a_changed_index_apart(services: Services) -> None:
    """A migration that built the claim index ascending, or for the wrong status,
    would be caught by the index comparison (Alembic alone would not see it)."""
    with services.db.write_engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_tasks_claim")
        conn.exec_driver_sql(
            "CREATE INDEX ix_tasks_claim ON tasks (account_id, priority, id) "
            "WHERE status = 'running'"
        )
    with services.db.write_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []  # blind to it
        stored = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_tasks_claim'"
        ).scalar_one()
        index = next(i for i in metadata.tables["tasks"].indexes if i.name == "ix_tasks_claim")
        declared = str(CreateIndex(index).compile(dialect=conn.dialect))
    assert _normalise(stored) != _normalise(declared)
