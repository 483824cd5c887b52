"""Shared fixtures: settings with short timings, services on a real SQLite file,
and a real ``taskgate serve`` process driven over HTTP."""

from __future__ import annotations

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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fast_settings(tmp_path / "data")


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
