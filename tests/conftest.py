"""Shared fixtures: settings with short timings, services on a real SQLite file and
on a real PostgreSQL database, and a real ``taskgate serve`` process driven over
HTTP.

Every test that reaches the database through these fixtures (``backend``,
``database_url``, ``settings``, ``services``, ``data_dir``, ``server``, and the
server fixtures of the test directories, which take ``backend``) is parametrised
over SQLite and PostgreSQL, where it gets a fresh database of its own: the whole
suite, the store level and the process level, runs on both. A test that can only
mean something on one of them says so with ``@pytest.mark.sqlite_only`` or
``@pytest.mark.postgresql_only`` and the reason in its docstring.
"""

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
from tests.databases import Backend, PostgresServer, Unreachable, server_url  # noqa: E402
from tests.helpers import ServerProcess, shared_secret, start_server  # noqa: E402

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
    url = values.get("database_url")
    if isinstance(url, str) and url.startswith("postgresql"):
        # Every node of a PostgreSQL deployment shares one secret key.
        values.setdefault("secret_key", shared_secret(url))
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


DIALECTS = ("sqlite", "postgresql")


@pytest.fixture(scope="session", params=DIALECTS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """The database the test runs on. Session-scoped, so that server fixtures of any
    scope can take it (each makes its own database from it)."""
    if request.param == "sqlite":
        return Backend("sqlite")
    return Backend("postgresql", request.getfixturevalue("postgres_server"))


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Leave out the runs of single-dialect tests on the other dialect, and keep
    together (one xdist group) the tests that share a server of a module or session
    on one dialect, so that a parallel run starts each such server once.

    Before the other plugins (pytest-xdist reads the groups in its own hook), and
    after them a check that the groups reached pytest-xdist."""
    _select_and_group(config, items)
    yield
    _check_groups_reach_xdist(config, items)


def _select_and_group(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        dialect = str(callspec.params.get("backend")) if callspec is not None else ""
        other = {"sqlite": "postgresql_only", "postgresql": "sqlite_only"}.get(dialect)
        if other is not None and item.get_closest_marker(other) is not None:
            left_out.append(item)
            continue
        kept.append(item)
        shared = _shared_fixture(item)
        if shared is not None:
            item.add_marker(pytest.mark.xdist_group(f"{shared}:{dialect}"))
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


_GROUP_LOST = pytest.StashKey[str]()


def _check_groups_reach_xdist(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A worker of ``--dist loadgroup`` sends each test's group in its node id (a
    suffix ``@group``). Where pytest-xdist cannot add it (pytest-dev/pytest-xdist#1386),
    the groups are lost without a word and every shared server starts once per
    worker that runs one of its tests: such tests fail at once, saying so."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid:
            item.stash[_GROUP_LOST] = (
                "pytest-xdist's --dist loadgroup did not receive this test's group: "
                f"pytest {pytest.__version__} and this pytest-xdist do not work together "
                "(see the pin in pyproject.toml)"
            )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    lost = item.stash.get(_GROUP_LOST, None)
    if lost is not None:
        pytest.fail(lost, pytrace=False)


def _shared_fixture(item: pytest.Item) -> str | None:
    """Where the module- or session-scoped fixture on ``backend`` that the test uses
    (a shared server) is defined: its module, or for a session one its name."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if not definitions or name == "backend":
            continue
        definition = definitions[-1]
        if definition.scope == "function" or "backend" not in definition.argnames:
            continue
        if definition.scope == "session":
            return str(name)
        return item.nodeid.split("::", 1)[0]
    return None


@pytest.fixture
def database_url(backend: Backend) -> Iterator[str | None]:
    """The store-level tests run on both databases: None for SQLite in the data dir,
    or the URL of a fresh, migrated PostgreSQL database of the test's own."""
    if backend.postgres is None:
        yield None
        return
    url = backend.postgres.create()
    try:
        yield url
    finally:
        backend.postgres.drop(url)


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
def data_dir(tmp_path: Path, backend: Backend) -> Iterator[Path]:
    """The data dir of the test's own taskgate processes (``start_server``,
    ``run_cli``, workers), bound on PostgreSQL to a fresh database of its own."""
    with backend.bound(tmp_path / "data") as bound:
        yield bound


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    """A real ``taskgate serve`` with two worker slots and short timings."""
    proc = start_server(data_dir)
    try:
        yield proc
    finally:
        proc.stop()
