"""The schema the migrations build is the schema the code declares, on both databases.

Alembic's autogenerate comparison sees tables, columns, types, nullability, unique
constraints and index columns. On SQLite it does not see the sort order of an
index column (``priority DESC``), a partial index's WHERE clause, or CHECK
constraints; those are compared on their own: each index's DDL as SQLAlchemy
compiles it from the table definitions against the DDL SQLite stored, and the
CHECK constraints by name and text.

On PostgreSQL the server itself says what it built: the migrated database's
catalog (every index's definition, every constraint's, every column's type,
nullability and default, the sequences) must equal that of a database built
directly from the table definitions (``metadata.create_all``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Connection, create_engine, inspect
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex

from taskgate.composition import Services
from taskgate.store import migrate
from taskgate.store.postgres import normalise_url
from taskgate.store.tables import metadata
from tests.databases import PostgresServer


def _normalise(ddl: str) -> str:
    ddl = re.sub(r'["`\[\]]', "", ddl)
    ddl = re.sub(r"\s+", " ", ddl).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", ddl).lower()


def _is_sqlite(services: Services) -> bool:
    return services.db.is_sqlite


# -- PostgreSQL: the catalog of the migrated database against the declared one ----


def _pg_catalog(conn: Connection) -> dict[str, dict[str, Any]]:
    """What PostgreSQL built, in its own words (the table of migration versions left out)."""
    where = "AND {0} <> 'alembic_version'"
    indexes = conn.exec_driver_sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        + where.format("tablename")
    ).all()
    constraints = conn.exec_driver_sql(
        "SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
        + where.format("conrelid::regclass::text")
    ).all()
    columns = conn.exec_driver_sql(
        "SELECT table_name || '.' || column_name, "
        "concat_ws(' ', data_type, character_maximum_length, is_nullable, column_default) "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        + where.format("table_name")
    ).all()
    sequences = conn.exec_driver_sql(
        "SELECT sequencename, data_type::text FROM pg_sequences WHERE schemaname = 'public'"
    ).all()
    return {
        "indexes": dict(indexes),
        "constraints": dict(constraints),
        "columns": dict(columns),
        "sequences": dict(sequences),
    }


def _declared_catalog(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """The catalog of a new PostgreSQL database built from the table definitions."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create(migrated=False)
    engine = create_engine(normalise_url(url), poolclass=NullPool)
    try:
        metadata.create_all(engine)
        with engine.connect() as conn:
            return _pg_catalog(conn)
    finally:
        engine.dispose()
        server.drop(url)


# -- both --------------------------------------------------------------------------


def test_autogenerate_finds_no_difference(services: Services) -> None:
    assert migrate.is_up_to_date(services.db)
    with services.db.write_engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_the_head_revision_is_the_newest_migration() -> None:
    assert migrate.head_revision() == migrate.HEAD_REVISION


def test_the_revision_is_read_as_alembic_records_it(services: Services) -> None:
    db = services.db
    assert migrate.current_revision(db) == migrate.HEAD_REVISION
    migrate.downgrade(db, "0006")
    assert migrate.current_revision(db) == "0006"
    assert not migrate.is_up_to_date(db)
    assert not db.read_sync(migrate.is_current)
    migrate.downgrade(db, "base")
    assert migrate.current_revision(db) is None
    assert not migrate.is_up_to_date(db)
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.HEAD_REVISION
    assert db.read_sync(migrate.is_current)
    # Already there: nothing to do.
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.HEAD_REVISION


def test_processes_that_only_check_the_schema_do_not_load_alembic() -> None:
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, taskgate.cli.main, taskgate.server, taskgate.worker.main; "
            "print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules: list[str] = json.loads(found.stdout)
    assert "taskgate.store.migrate" in modules
    assert [m for m in modules if m.split(".")[0] in ("alembic", "mako")] == []


def test_every_index_is_built_as_declared(
    services: Services, request: pytest.FixtureRequest
) -> None:
    """Index by index, including sort order and partial-index conditions."""
    with services.db.write_engine.connect() as conn:
        declared = {
            str(index.name): _normalise(str(CreateIndex(index).compile(dialect=conn.dialect)))
            for table in metadata.sorted_tables
            for index in table.indexes
        }
        if _is_sqlite(services):
            stored = {
                name: _normalise(sql)
                for name, sql in conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                )
            }
            assert set(stored) == set(declared)
            for name, ddl in declared.items():
                assert stored[name] == ddl, name
        else:
            built = _pg_catalog(conn)["indexes"]
            expected = _declared_catalog(request)["indexes"]
            assert built == expected
            assert set(declared) <= set(built)
            assert "priority DESC" in built["ix_tasks_claim"]
            assert "WHERE ((status)::text = 'queued'::text)" in built["ix_tasks_claim"]
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
            names = {
                c["name"]: _normalise(c["sqltext"])
                for c in inspector.get_check_constraints(table.name)
            }
            if _is_sqlite(services):
                assert names == declared(table), table.name
            else:
                assert set(names) == set(declared(table)), table.name
    assert declared(metadata.tables["tasks"])  # there is something to compare


def test_postgresql_catalog_matches_the_declared_schema(
    services: Services, request: pytest.FixtureRequest
) -> None:
    """Constraints (CHECK, keys, foreign keys), columns with their types, nullability
    and defaults, and sequences, as PostgreSQL reports them."""
    if _is_sqlite(services):
        pytest.skip("PostgreSQL only: SQLite's catalog is the DDL text compared above")
    with services.db.write_engine.connect() as conn:
        built = _pg_catalog(conn)
    expected = _declared_catalog(request)
    for part in ("constraints", "columns", "sequences"):
        assert built[part] == expected[part], part
    checks = {k: v for k, v in built["constraints"].items() if v.startswith("CHECK")}
    assert "tasks.ck_tasks_status" in checks
    assert "events_position_seq" in built["sequences"]


def test_normalisation_tells_a_changed_index_apart(
    services: Services, request: pytest.FixtureRequest
) -> None:
    """A migration that built the claim index ascending, or for the wrong status,
    would be caught by the index comparison (on SQLite, Alembic alone would not
    see it)."""
    with services.db.write_engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_tasks_claim")
        conn.exec_driver_sql(
            "CREATE INDEX ix_tasks_claim ON tasks (account_id, priority, id) "
            "WHERE status = 'running'"
        )
    with services.db.write_engine.connect() as conn:
        index = next(i for i in metadata.tables["tasks"].indexes if i.name == "ix_tasks_claim")
        declared = str(CreateIndex(index).compile(dialect=conn.dialect))
        if _is_sqlite(services):
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []  # blind to it
            stored = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_tasks_claim'"
            ).scalar_one()
            assert _normalise(stored) != _normalise(declared)
        else:
            built = _pg_catalog(conn)["indexes"]["ix_tasks_claim"]
            assert built != _declared_catalog(request)["indexes"]["ix_tasks_claim"]
