"""The chaos suite, short: 200+ tasks on 2 API and 4 worker processes on PostgreSQL,
3 worker kills, 1 API kill during a submit burst and 1 PostgreSQL outage; then
every acknowledged task exists, has ended as its kind must, had its events
delivered to the webhook receiver, and ``taskgate doctor`` is clean.

The outage is simulated on the test's own database (the server is shared with the
rest of the suite); ``TASKGATE_CHAOS_RESTART_POSTGRES=1`` restarts the real server
instead (``bench/chaos.py --restart-postgres`` does the same for the long run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.driver import ChaosPlan, run
from tests.databases import PostgresServer

pytestmark = [pytest.mark.acceptance, pytest.mark.chaos, pytest.mark.timeout(240)]


def test_taskgate_survives_kills_and_a_database_outage(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    plan = ChaosPlan(
        tasks=200,
        worker_kills=3,
        api_kills=1,
        outages=1,
        kill_interval=4.0,
        outage_seconds=3.0,
        real_restart=os.environ.get("TASKGATE_CHAOS_RESTART_POSTGRES") == "1",
    )
    server = postgres_server.url.render_as_string(hide_password=False)
    report = run(plan, tmp_path / "chaos", database_server=server)
    print(report.render())
    assert not report.problems, report.render()
    figures = report.figures
    assert figures["tasks_acknowledged"] >= plan.tasks
    assert figures["kills"].get("worker", 0) >= plan.worker_kills
    assert figures["kills"].get("api", 0) >= plan.api_kills
    assert figures["kills"].get("postgresql_outage", 0) >= plan.outages
