"""Schema migrations (Alembic), applied programmatically."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from taskgate.store.db import Database

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


@functools.cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    """The database's revision (:class:`~taskgate.core.errors.Unavailable` when it
    cannot be reached)."""
    return db.read_sync(lambda conn: MigrationContext.configure(conn).get_current_revision())


def is_up_to_date(db: Database) -> bool:
    return current_revision(db) == head_revision()


def is_current(conn: Connection) -> bool:
    """Whether the database on this connection is at the head revision."""
    return MigrationContext.configure(conn).get_current_revision() == head_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply pending migrations in one transaction."""
    _run(db, lambda config: command.upgrade(config, revision))


def downgrade(db: Database, revision: str) -> None:
    """Revert migrations down to ``revision``, in one transaction."""
    _run(db, lambda config: command.downgrade(config, revision))


def _run(db: Database, step: Callable[[Config], None]) -> None:
    config = _config()
    with db.write_engine.connect() as conn:
        # Alembic alters a SQLite table by rebuilding it, which a referencing
        # table's foreign key would refuse halfway; the keys are off while the
        # migration runs (the pragma is a no-op inside a transaction, so it is
        # set first) and checked, all of them, before it commits.
        if db.is_sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                config.attributes["connection"] = conn
                step(config)
                if db.is_sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken}")
        finally:
            if db.is_sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def autogenerate(db: Database, message: str) -> None:
    """Write a new revision from the difference between the tables and the database."""
    config = _config()
    with db.write_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)
