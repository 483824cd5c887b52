"""Shared fixtures: settings with short timings, services on a real SQLite file and
on a real PostgreSQL database, and a real ``taskgate serve`` process driven over
HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from taskgate.composition import Services, build  # noqa: E402
from taskgate.settings import Settings  # noqa: E402
from taskgate.store import migrate  # noqa: E402
from tests.databases import PostgresServer, Unreachable, server_url  # noqa: E402
from tests.helpers import ServerProcess, start_server  # noqa: E402

TEST_WORKFLOWS = ["taskgate_testflows"]


def fast_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "workflows": TEST_WORKFLOWS,
        "lease_seconds": 2.0,
        "cancel_grace_seconds": 1.0,
        "drain_seconds": 2.0,
        "poll_interval_seconds": 0.2,
        "retry_backoff_seconds": 0.05,
        "workers": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test PostgreSQL server; a test that needs it is skipped when it does not
    answer, and fails instead under CI (``CI=true``)."""
    try:
        server = PostgresServer(server_url())
    except Unreachable as exc:
        message = f"{exc} (set TASKGATE_TEST_DATABASE_URL)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The store-level tests run on both databases: None for SQLite in the data dir,
    or the URL of a fresh, migrated PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create()
    try:
        yield url
    finally:
        server.drop(url)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return fast_settings(tmp_path / "data", database_url=database_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build(settings)
    migrate.upgrade(built.db)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real ``taskgate serve`` with two worker slots and short timings."""
    proc = start_server(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()
