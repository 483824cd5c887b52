"""Schema migrations (Alembic), applied programmatically.

Alembic (with Mako) is imported only to migrate: reading a database's revision
and comparing it with :data:`HEAD_REVISION` is one query, so the processes that
only check the schema (``serve`` on an up-to-date database, ``worker``, every
admin command) start without it — about a third of a command's start-up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, MetaData, String, Table, inspect, select

from taskgate.store.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

_SCRIPTS = Path(__file__).parent / "migrations"

#: The newest revision in ``migrations/versions`` (a test holds it to Alembic's
#: own answer, so a new migration cannot be added without it).
HEAD_REVISION = "0007"

# Alembic's bookkeeping table, as Alembic makes it.
_VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


@functools.cache
def head_revision() -> str | None:
    """The head revision as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def revision_of(conn: Connection) -> str | None:
    """The revision of the database on this connection (None before the first
    migration)."""
    if not inspect(conn).has_table(_VERSION.name):
        return None
    return conn.execute(select(_VERSION.c.version_num)).scalar()


def current_revision(db: Database) -> str | None:
    """The database's revision (:class:`~taskgate.core.errors.Unavailable` when it
    cannot be reached)."""
    return db.read_sync(revision_of)


def is_up_to_date(db: Database) -> bool:
    return current_revision(db) == HEAD_REVISION


def is_current(conn: Connection) -> bool:
    """Whether the database on this connection is at the head revision."""
    return revision_of(conn) == HEAD_REVISION


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply pending migrations in one transaction (to the head: nothing to do,
    and Alembic not loaded, when the database is already there)."""
    if revision == "head" and is_up_to_date(db):
        return
    from alembic import command

    _run(db, lambda config: command.upgrade(config, revision))


def downgrade(db: Database, revision: str) -> None:
    """Revert migrations down to ``revision``, in one transaction."""
    from alembic import command

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
    from alembic import command

    config = _config()
    with db.write_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)
