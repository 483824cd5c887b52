"""Fresh PostgreSQL databases for tests.

The server is ``TASKGATE_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``; the URL's database is only used
to create and drop others). One template database is migrated per test session
(per xdist worker: each names its databases with its own tag); each test gets its
own copy (``CREATE DATABASE … TEMPLATE``), dropped afterwards.

:class:`Backend` is what the suite is parametrised by: SQLite in the data dir, or
PostgreSQL, where each data dir is bound to a fresh database of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from taskgate.store import migrate
from taskgate.store.db import Database
from taskgate.store.postgres import normalise_url
from tests.helpers import forget, use_postgres

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("TASKGATE_TEST_DATABASE_URL") or DEFAULT_URL


class Unreachable(Exception):
    """The test server does not answer."""


class PostgresServer:
    """Creates and drops databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(normalise_url(url))
        self._admin: Engine = create_engine(
            self.url,
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"connect_timeout": 5},
        )
        try:
            with self._admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            self._admin.dispose()
            raise Unreachable(f"PostgreSQL at {self.url.render_as_string()}: {exc}") from exc
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self._tag = f"{worker}_{uuid.uuid4().hex[:8]}"
        self.template: str | None = None

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def _new_name(self, kind: str) -> str:
        return f"taskgate_{kind}_{self._tag}_{uuid.uuid4().hex[:8]}"

    def create(self, *, migrated: bool = True) -> str:
        """A new database (a copy of the migrated template, or empty); its URL."""
        name = self._new_name("test")
        with self._admin.connect() as conn:
            if migrated:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self._template()}"')
            else:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def _template(self) -> str:
        if self.template is None:
            name = self._new_name("template")
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            db = Database(self.url_of(name), pool_size=1)
            try:
                migrate.upgrade(db)
            finally:
                db.close()
            self.template = name
        return self.template

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self.template is not None:
            self.drop(self.url_of(self.template))
        self._admin.dispose()


@dataclass(frozen=True)
class Backend:
    """The database the taskgate processes of a test use: ``sqlite`` (the data dir's
    file) or ``postgresql`` (a fresh database on the test server per data dir)."""

    name: str
    postgres: PostgresServer | None = None

    @contextmanager
    def bound(self, data_dir: Path) -> Iterator[Path]:
        """``data_dir``, with a fresh migrated PostgreSQL database of its own bound to
        it for the block (dropped afterwards); on SQLite ``data_dir`` as it is."""
        if self.postgres is None:
            yield data_dir
            return
        url = self.postgres.create()
        use_postgres(data_dir, url)
        try:
            yield data_dir
        finally:
            forget(data_dir)
            self.postgres.drop(url)
