"""The chaos run, long: taskgate on PostgreSQL under ``kill -9`` of its processes
and a database outage, checked against the client's record; prints the figures.

    python bench/chaos.py                      # 1,000 tasks, 100 worker kills
    python bench/chaos.py --restart-postgres   # restart the real cluster once

The run is the one the test suite's short version makes (``tests/chaos/driver.py``).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.chaos.driver import ChaosPlan, run  # noqa: E402
from tests.databases import server_url  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks submitted (1000)")
    parser.add_argument("--kills", type=int, default=100, help="worker kills (100)")
    parser.add_argument(
        "--kill-interval", type=float, default=2.0, help="seconds between worker kills (2)"
    )
    parser.add_argument("--api-kills", type=int, default=1, help="API kills, each in a burst (1)")
    parser.add_argument("--burst", type=int, default=100, help="tasks per API-kill burst (100)")
    parser.add_argument("--outages", type=int, default=1, help="PostgreSQL outages (1)")
    parser.add_argument(
        "--outage-seconds", type=float, default=5.0, help="how long each outage lasts (5)"
    )
    parser.add_argument(
        "--restart-postgres",
        action="store_true",
        help="stop and start the whole PostgreSQL cluster (pg_ctlcluster) for each outage "
        "instead of refusing connections to the run's own database: only on a server "
        "nobody else is using",
    )
    parser.add_argument("--api-nodes", type=int, default=2, help="API processes (2)")
    parser.add_argument("--worker-nodes", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--slots", type=int, default=2, help="slots per worker process (2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (random)")
    parser.add_argument(
        "--database", default=None, help="PostgreSQL server URL (TASKGATE_TEST_DATABASE_URL)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    plan = ChaosPlan(
        tasks=args.tasks,
        worker_kills=args.kills,
        api_kills=args.api_kills,
        outages=args.outages,
        api_nodes=args.api_nodes,
        worker_nodes=args.worker_nodes,
        slots=args.slots,
        kill_interval=args.kill_interval,
        outage_seconds=args.outage_seconds,
        burst=args.burst,
        real_restart=args.restart_postgres,
        settle_timeout=120.0,
        seed=args.seed,
        keep_database=args.keep,
    )
    with tempfile.TemporaryDirectory(prefix="taskgate-chaos-") as scratch:
        run_dir = Path(tempfile.mkdtemp(prefix="taskgate-chaos-")) if args.keep else Path(scratch)
        report = run(plan, run_dir, database_server=args.database or server_url())
        print(report.render())
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            document = {"figures": report.figures, "problems": report.problems}
            args.output.write_text(json.dumps(document, indent=2, default=str))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
