"""Throw-away PostgreSQL databases for the benchmarks.

The server is ``TASKGATE_BENCH_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); each database a bench makes
there is created empty and dropped when the bench is done with it, on failure too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

SERVER_ENV = "TASKGATE_BENCH_DATABASE_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
#: The secret every taskgate node of a benchmark shares (required on PostgreSQL).
BENCH_SECRET_KEY = "taskgate-bench-secret-key-not-for-production"


def server_url() -> str:
    return os.environ.get(SERVER_ENV, DEFAULT_SERVER)


def libpq_url(url: str) -> str:
    """``url`` without a SQLAlchemy driver name (``postgresql+psycopg://`` too)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(server: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server`` (a libpq URL)."""
    url = make_url(server).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(prefix: str, server: str | None = None) -> Iterator[str]:
    """Create an empty database, yield its URL, and drop it afterwards (closing any
    connection still open to it)."""
    server = libpq_url(server or server_url())
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
