"""The chaos run, long: taskgate on PostgreSQL under ``kill -9`` of its processes
and a restart of PostgreSQL, checked against the client's record; prints the figures.

    python bench/chaos.py                        # 1,000 tasks, 100 worker kills
    python bench/chaos.py --outage simulated     # on a shared server (--database)

The run is the one the test suite's short version makes (``tests/chaos/driver.py``).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import get_args

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.chaos.cluster import OutageKind  # noqa: E402
from tests.chaos.driver import ChaosPlan, run  # noqa: E402


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
        "--outage",
        choices=get_args(OutageKind),
        default="private",
        help="private (default): the run makes a PostgreSQL cluster of its own (initdb, "
        "pg_ctl) and each outage stops and starts it; simulated: on the --database server, "
        "the run's database refuses connections and its sessions are ended; shared: each "
        "outage stops and starts the --database server's whole cluster (pg_ctlcluster), "
        "only on a server nobody else is using",
    )
    parser.add_argument("--api-nodes", type=int, default=2, help="API processes (2)")
    parser.add_argument("--worker-nodes", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--slots", type=int, default=2, help="slots per worker process (2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (random)")
    parser.add_argument(
        "--database",
        default=None,
        help="PostgreSQL server URL of the simulated and shared outages "
        "(TASKGATE_TEST_DATABASE_URL)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the logs and the database (the private cluster, stopped, in its directory)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    if args.database is not None and args.outage == "private":
        parser.error("--database is the server of --outage simulated or shared")

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
        outage=args.outage,
        settle_timeout=120.0,
        seed=args.seed,
        keep_database=args.keep,
    )
    with tempfile.TemporaryDirectory(prefix="taskgate-chaos-") as scratch:
        run_dir = Path(tempfile.mkdtemp(prefix="taskgate-chaos-")) if args.keep else Path(scratch)
        report = run(plan, run_dir, database_server=args.database)
        print(report.render())
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            document = {"figures": report.figures, "problems": report.problems}
            args.output.write_text(json.dumps(document, indent=2, default=str))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
