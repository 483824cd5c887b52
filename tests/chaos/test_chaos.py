"""The chaos suite, short: 200+ tasks on 2 API and 4 worker processes on PostgreSQL,
3 worker kills, 1 API kill during a submit burst and 1 real restart of PostgreSQL;
then every acknowledged task exists, has ended as its kind must, had its events
delivered to the webhook receiver, and ``taskgate doctor`` is clean.

The run has a PostgreSQL cluster of its own (``initdb`` in a temporary directory,
deleted afterwards), so the restart stops a real server without disturbing the
rest of the suite on the shared one. Without ``initdb`` and ``pg_ctl`` the test is
skipped with a message, and fails instead under CI (``CI=true``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import pgcluster
from tests.chaos.driver import ChaosPlan, run

pytestmark = [pytest.mark.acceptance, pytest.mark.chaos, pytest.mark.timeout(240)]


@pytest.fixture
def private_postgresql() -> None:
    """A PostgreSQL cluster of the test's own can be made here."""
    reason = pgcluster.unavailable()
    if reason is None:
        return
    message = f"the chaos run needs a PostgreSQL cluster of its own: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.usefixtures("private_postgresql")
def test_taskgate_survives_kills_and_a_database_outage(tmp_path: Path) -> None:
    plan = ChaosPlan(
        tasks=200,
        worker_kills=3,
        api_kills=1,
        outages=1,
        kill_interval=4.0,
        outage_seconds=3.0,
        outage="private",
    )
    report = run(plan, tmp_path / "chaos")
    print(report.render())
    assert not report.problems, report.render()
    figures = report.figures
    assert figures["postgresql_outage"] == "real restart of a private PostgreSQL cluster"
    assert figures["tasks_acknowledged"] >= plan.tasks
    assert figures["kills"].get("worker", 0) >= plan.worker_kills
    assert figures["kills"].get("api", 0) >= plan.api_kills
    assert figures["kills"].get("postgresql_outage", 0) >= plan.outages
