"""Benchmark taskgate against the ceiling of its HTTP stack: ``python bench/run.py``.

Phases, in one run (see bench/README.md):

ceiling   a bare FastAPI route under uvicorn (uvloop, httptools, no access log), wrk;
          the same on the standard asyncio loop, for reference
poll      ``GET /v1/tasks/{id}`` of a completed task on ``taskgate serve``
dispatch  POST to handler start, one task at a time, on the same idle server
submit    ``POST /v1/tasks`` with wrk on ``taskgate serve --no-workers``, each task
          reserving credits; submit_free the same with tasks that cost nothing
          (no reservation), for the cost of the reservation
drain     N tasks queued beforehand, then ``taskgate worker --workers W``
big_table (PostgreSQL only) poll, dispatch and submit with a million tasks in the
          table, against the same with a nearly empty one (``bigtable.py``)

``--database postgresql`` runs every phase on PostgreSQL: each server phase gets
its own fresh database on ``TASKGATE_BENCH_DATABASE_URL``, dropped at the end.

The run is INVALID (exit status 2) when the ceiling is below ``--min-ceiling``: the
machine was too busy for the other figures to mean anything. A phase that fails is
reported and the run exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx

from bigtable import big_table
from dispatch import measure_dispatch
from drain import drain, enqueue
from pgserver import SERVER_ENV, fresh_database, server_url
from probe import Probe
from procs import (
    BENCH_DIR,
    HOST,
    answers,
    free_port,
    running,
    steal_seconds,
    tail,
    taskgate_cli,
    taskgate_env,
    wait_for,
    work_dir,
)
from wrk import WrkResult, run_wrk

ACCOUNT = "bench"
SUBMIT_BODY = json.dumps({"workflow": "wait", "input": {"seconds": 0}})
# A submit that reserves credits (a ledger entry and the account's balance in the
# task's transaction), and one that costs nothing (no reservation is written).
RESERVING_BODY = json.dumps({"workflow": "wait", "input": {"seconds": 0, "credits": "0.001"}})
FREE_BODY = SUBMIT_BODY
# Enough for every reserving submit of a run.
BENCH_CREDITS = "1000000"
TARGET_POLL_RATIO = 0.5
TARGET_DISPATCH_P50_MS = 5.0
TARGET_DRAIN_RATE = 2000.0
TARGET_BIG_POLL_P99_RATIO = 1.2

Results = dict[str, dict[str, Any]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark taskgate against a bare FastAPI ceiling.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load = parser.add_argument_group("HTTP load (wrk)")
    load.add_argument("--duration", type=float, default=10, help="seconds per wrk measurement")
    load.add_argument("--warmup", type=float, default=2, help="seconds of wrk before each one")
    load.add_argument("--connections", type=int, default=64)
    load.add_argument("--threads", type=int, default=2)
    load.add_argument(
        "--min-ceiling", type=float, default=4000, help="below this req/s the run is INVALID"
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the store of every phase; postgresql: a fresh database per phase on the "
        f"server of {SERVER_ENV} (default postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--tasks", type=int, default=20_000, help="queued tasks to drain")
    tasks.add_argument("--workers", type=int, default=16, help="worker slots for the drain")
    tasks.add_argument(
        "--drain-processes",
        type=int,
        default=1,
        help="taskgate worker processes for the drain, each with --workers slots",
    )
    tasks.add_argument(
        "--enqueue",
        choices=["bulk", "submit"],
        default="bulk",
        help="bulk: TaskService.submit_many, 1000 per transaction; "
        "submit: TaskService.submit for each task (slow)",
    )
    tasks.add_argument("--drain-timeout", type=float, default=900, help="seconds")
    tasks.add_argument(
        "--serve-workers", type=int, default=2, help="worker slots of the server for dispatch"
    )
    tasks.add_argument("--samples", type=int, default=200, help="dispatch latency samples")
    tasks.add_argument("--warmup-samples", type=int, default=10)
    big = parser.add_argument_group("big table (PostgreSQL)")
    big.add_argument("--big-tasks", type=int, default=1_000_000, help="tasks in the big table")
    big.add_argument("--big-queued", type=int, default=100_000, help="of them queued")
    big.add_argument("--no-big-table", action="store_true", help="skip the big_table phase")
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "latest.json")
    out.add_argument("--keep", action="store_true", help="keep the data dirs and process logs")
    return parser.parse_args(argv)


def say(text: str = "") -> None:
    print(text, flush=True)


class Bench:
    def __init__(
        self, args: argparse.Namespace, root: Path, databases: contextlib.ExitStack
    ) -> None:
        self.args = args
        self.root = root
        #: Drops the PostgreSQL databases of the run when it closes.
        self.databases = databases
        #: The PostgreSQL database of each data dir (none: its SQLite file).
        self.urls: dict[Path, str] = {}
        self.results: Results = {}
        self.failed: list[str] = []
        #: Per phase: the load average when it started, and how long it took.
        self.phases: Results = {}

    # -- plumbing ----------------------------------------------------------------

    def phase(self, name: str, fn: Callable[[], Results]) -> Results | None:
        """Run a phase; a failure is recorded and reported, and the run goes on."""
        load = os.getloadavg()[0]
        say(f"\n== {name} (load average {load:.2f})")
        started = time.monotonic()
        steal_before = steal_seconds()
        try:
            results = fn()
        except Exception as exc:
            traceback.print_exc()
            say(f"!! {name} failed: {exc}")
            for log in sorted(self.root.glob("*.log")):
                say(f"-- last lines of {log.name}:\n{tail(log)}")
            self.results[name] = {"error": str(exc)}
            self.failed.append(name)
            return None
        finally:
            stolen = steal_seconds() - steal_before
            self.phases[name] = {
                "load_average": load,
                "seconds": round(time.monotonic() - started, 1),
                "steal_seconds": round(stolen, 2),
            }
            if stolen > 0.5:
                say(f"   (the hypervisor took {stolen:.1f} s of CPU time during this phase)")
        self.results.update(results)
        return results

    def wrk(
        self, url: str, *, before: Callable[[], None] | None = None, **request: Any
    ) -> WrkResult:
        """A warm-up run, then ``before()``, then the measured run."""
        load = {"connections": self.args.connections, "threads": self.args.threads}
        if self.args.warmup > 0:
            run_wrk(url, seconds=self.args.warmup, **load, **request)
        if before is not None:
            before()
        return run_wrk(url, seconds=self.args.duration, **load, **request)

    def data_dir(self, name: str) -> tuple[Path, str]:
        """A fresh data dir with the bench account (concurrency ≥ every slot count) and
        an API key for it."""
        path = self.root / name
        path.mkdir()
        if self.args.database == "postgresql":
            url = self.databases.enter_context(fresh_database(f"taskgate_bench_{name}"))
            self.urls[path] = url
            taskgate_cli(path, "migrate", database_url=url)
        url_or_none = self.urls.get(path)
        concurrency = max(64, self.args.workers, self.args.serve_workers)
        taskgate_cli(
            path,
            "accounts",
            "create",
            ACCOUNT,
            "--concurrency",
            str(concurrency),
            "--credits",
            BENCH_CREDITS,
            database_url=url_or_none,
        )
        key = taskgate_cli(path, "keys", "create", ACCOUNT, database_url=url_or_none)
        key = key.strip().splitlines()[-1].strip()
        if not key.startswith("tg_live_"):
            raise RuntimeError(f"unexpected output of `taskgate keys create`: {key!r}")
        return path, key

    def serve(self, data_dir: Path, port: int, *flags: str) -> AbstractContextManager[Popen[bytes]]:
        args = ["serve", "--no-access-log", "--host", HOST, "--port", str(port), *flags]
        return running(
            [sys.executable, "-m", "taskgate", *args],
            env=taskgate_env(data_dir, database_url=self.urls.get(data_dir)),
            log_path=self.root / f"serve-{data_dir.name}.log",
        )

    # -- phases ------------------------------------------------------------------

    def ceiling(self, loop: str) -> Results:
        port = free_port()
        with running(
            [
                sys.executable,
                str(BENCH_DIR / "ceiling_app.py"),
                "--port",
                str(port),
                "--loop",
                loop,
            ],
            log_path=self.root / f"ceiling-{loop}.log",
        ) as app:
            url = f"http://{HOST}:{port}/ping"
            wait_for(lambda: answers(url), timeout=30, what="the ceiling app", alive=app)
            result = self.wrk(url)
        say(f"ceiling ({loop})  {result.summary()}")
        name = "ceiling" if loop == "uvloop" else f"ceiling_{loop}"
        return {name: {**result.to_json(), "loop": loop}}

    def poll_and_dispatch(self) -> Results:
        """Both on one ``taskgate serve`` with worker slots."""
        data_dir, key = self.data_dir("serve")
        port = free_port()
        base = f"http://{HOST}:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        with (
            self.serve(data_dir, port, "--workers", str(self.args.serve_workers)) as server,
            Probe(data_dir, self.urls.get(data_dir)) as probe,
            httpx.Client(base_url=base, headers=headers, timeout=30) as client,
        ):
            wait_for(lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server)
            response = client.post("/v1/tasks", content=SUBMIT_BODY)
            response.raise_for_status()
            task_id = response.json()["id"]
            wait_for(
                lambda: (probe.task(task_id) or ("", None))[0] == "completed",
                timeout=30,
                what="the polled task to complete",
            )
            poll = self.wrk(f"{base}/v1/tasks/{task_id}", headers=headers)
            say(f"poll      {poll.summary()}")
            dispatch = measure_dispatch(
                client, probe, samples=self.args.samples, warmup=self.args.warmup_samples
            )
            figures = dispatch.to_json()
            say(
                f"dispatch  p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms "
                f"({figures['samples']} samples; the POST alone: p50 "
                f"{figures['post_p50_ms']:.2f} ms)"
            )
        return {"poll": poll.to_json(), "dispatch": figures}

    def submit(self, name: str, body: str) -> Results:
        data_dir, key = self.data_dir(name)
        port = free_port()
        base = f"http://{HOST}:{port}"
        with (
            self.serve(data_dir, port, "--no-workers") as server,
            Probe(data_dir, self.urls.get(data_dir)) as probe,
        ):
            wait_for(lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server)
            counts: list[int] = []
            result = self.wrk(
                f"{base}/v1/tasks",
                # Requests of the warm-up still in flight land before the count.
                before=lambda: counts.append(_settled(probe.task_count)),
                method="POST",
                body=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            created = _settled(probe.task_count) - counts[0]
        tasks_rate = created / result.seconds
        say(f"{name:<12}{result.summary()}")
        say(f"{'':<12}{created:,} tasks created: {tasks_rate:,.0f} tasks/s")
        return {name: {**result.to_json(), "tasks_created": created, "tasks_rate": tasks_rate}}

    def drain(self) -> Results:
        data_dir, _key = self.data_dir("drain")
        args = self.args
        url = self.urls.get(data_dir)
        queued = enqueue(data_dir, ACCOUNT, args.tasks, args.enqueue, database_url=url)
        say(
            f"enqueued  {queued.tasks:,} tasks in {queued.seconds:.1f} s "
            f"({queued.rate:,.0f}/s, {queued.mode})"
        )
        result = drain(
            data_dir,
            count=args.tasks,
            slots=args.workers,
            timeout=args.drain_timeout,
            log_dir=self.root,
            processes=args.drain_processes,
            database_url=url,
        )
        say(
            f"drain     {result.rate:,.0f} tasks/s ({result.tasks:,} tasks in "
            f"{result.seconds:.2f} s on {result.processes} × {result.slots} slots; "
            f"{result.wall_seconds:.2f} s from starting the worker)"
        )
        say(f"          {result.events_written:,} event rows written: {result.events_by_type}")
        figures = result.to_json()
        figures["enqueue"] = {"mode": queued.mode, "seconds": round(queued.seconds, 2)}
        return {"drain": figures}

    # -- report ------------------------------------------------------------------

    def report(self) -> None:
        results = self.results
        ceiling: float | None = results.get("ceiling", {}).get("rate")

        def ratio(rate: float) -> str:
            return f"{rate / ceiling:6.1%} of ceiling" if ceiling else ""

        def http_row(name: str, unit: str = "req/s") -> str | None:
            data = results.get(name, {})
            if "rate" not in data:
                return None
            return (
                f"{name:<17}{data['rate']:>9,.0f} {unit:<8} p50 {data['p50_ms']:7.2f} ms  "
                f"p99 {data['p99_ms']:7.2f} ms  {ratio(data['rate'])}"
            )

        lines = [http_row("ceiling"), http_row("ceiling_asyncio")]
        poll = results.get("poll", {})
        if "rate" in poll:
            met = ceiling is not None and poll["rate"] >= TARGET_POLL_RATIO * ceiling
            lines.append(f"{http_row('poll')}  {_target(met, '≥ 50% of ceiling')}")
        for name in ("submit", "submit_free"):
            lines.append(http_row(name))
            submit = results.get(name, {})
            if "tasks_rate" in submit:
                lines.append(
                    f"{'  tasks created':<17}{submit['tasks_rate']:>9,.0f} {'tasks/s':<8} "
                    f"({submit['tasks_created']:,} tasks){'':>14}{ratio(submit['tasks_rate'])}"
                )
        reserving = results.get("submit", {}).get("tasks_rate")
        free = results.get("submit_free", {}).get("tasks_rate")
        if reserving and free:
            lines.append(
                f"{'  reserving/free':<17}{reserving / free:>9.2f} "
                "(the cost of the credit reservation on submit)"
            )
        dispatch = results.get("dispatch", {})
        if "p50_ms" in dispatch:
            met = dispatch["p50_ms"] <= TARGET_DISPATCH_P50_MS
            lines.append(
                f"{'dispatch':<17}{'':>18} p50 {dispatch['p50_ms']:7.2f} ms  "
                f"p99 {dispatch['p99_ms']:7.2f} ms  {'':>17}{_target(met, 'p50 ≤ 5 ms')}"
            )
        drained = results.get("drain", {})
        if "rate" in drained:
            met = drained["rate"] >= TARGET_DRAIN_RATE
            lines.append(
                f"{'drain':<17}{drained['rate']:>9,.0f} {'tasks/s':<8} "
                f"{drained['events_written']:,} event rows ({drained['events_per_task']}/task)  "
                f"{_target(met, '≥ 2,000 tasks/s')}"
            )
        table = results.get("big_table", {})
        if "ratios" in table:
            small, big, ratios = table["small"], table["big"], table["ratios"]
            met = ratios["poll_p99"] <= TARGET_BIG_POLL_P99_RATIO
            for label, key in (("poll", "poll"), ("poll queued", "poll_queued")):
                lines.append(
                    f"{'big ' + label:<17}{big[key]['rate']:>9,.0f} req/s    p99 "
                    f"{big[key]['p99_ms']:7.2f} ms vs {small[key]['p99_ms']:.2f} ms small: "
                    f"{ratios[key + '_p99']:.2f}×"
                    + (f"  {_target(met, 'p99 ≤ 1.2× small')}" if key == "poll" else "")
                )
            lines.append(
                f"{'big dispatch':<17}{'':>18} p50 {big['dispatch']['p50_ms']:7.2f} ms  "
                f"p99 {big['dispatch']['p99_ms']:7.2f} ms (small: p50 "
                f"{small['dispatch']['p50_ms']:.2f} ms)"
            )
            lines.append(
                f"{'big submit':<17}{big['submit']['rate']:>9,.0f} req/s    (small: "
                f"{small['submit']['rate']:,.0f} req/s, {ratios['submit_rate']:.2f}×)"
            )
        say("\n== summary")
        for line in lines:
            if line is not None:
                say(line)
        for name in self.failed:
            say(f"{name:<17}FAILED: {results[name]['error']}")


def _target(met: bool, text: str) -> str:
    return f"target {text}: {'met' if met else 'MISSED'}"


def _settled(count: Callable[[], int], quiet: float = 0.5, timeout: float = 30) -> int:
    """``count()`` once it has stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    value = count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = count()
        if now == value:
            break
        value = now
    return value


def write_results(path: Path, args: argparse.Namespace, bench: Bench, valid: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "valid": valid,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "database": args.database,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": {
            "poll_ratio_min": TARGET_POLL_RATIO,
            "dispatch_p50_ms_max": TARGET_DISPATCH_P50_MS,
            "drain_rate_min": TARGET_DRAIN_RATE,
            "big_table_poll_p99_ratio_max": TARGET_BIG_POLL_P99_RATIO,
        },
        "source": _source(),
        "results": bench.results,
        "phases": bench.phases,
        "failed": bench.failed,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    say(f"\nresults written to {path}")


def _source() -> dict[str, Any]:
    """The commit under test, and the files that differ from it."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "changed": [line[3:] for line in changed.splitlines()],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.database == "postgresql":
        say(f"PostgreSQL server: {server_url()}")
    with work_dir("taskgate-bench-", args.keep) as root, contextlib.ExitStack() as databases:
        bench = Bench(args, root, databases)
        ceiling = bench.phase("ceiling", lambda: bench.ceiling("uvloop"))
        rate = ceiling["ceiling"]["rate"] if ceiling else 0.0
        valid = rate >= args.min_ceiling
        if ceiling is None:
            say("\n*** INVALID RUN: the ceiling could not be measured (above). ***")
        elif not valid:
            say(
                f"\n*** INVALID RUN: the ceiling is {rate:,.0f} req/s, under "
                f"{args.min_ceiling:,.0f}: the machine was too busy to benchmark. ***"
            )
        else:
            bench.phase("ceiling_asyncio", lambda: bench.ceiling("asyncio"))
            bench.phase("poll_and_dispatch", bench.poll_and_dispatch)
            bench.phase("submit", lambda: bench.submit("submit", RESERVING_BODY))
            bench.phase("submit_free", lambda: bench.submit("submit_free", FREE_BODY))
            bench.phase("drain", bench.drain)
            if args.database == "postgresql" and not args.no_big_table:
                bench.phase("big_table", lambda: big_table(bench))
            bench.report()
        write_results(args.output, args, bench, valid)
        if not valid:
            return 2
        return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
