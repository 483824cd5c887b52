"""taskgate against Celery and procrastinate: ``python bench/peers.py``.

For each system, in one run (see bench/README.md):

drain     ``--tasks`` no-op tasks queued through the system's own API with no
          worker running, then two worker processes started; tasks/s from the
          first task's start to the last one's end
dispatch  one task at a time on idle workers: from just before the enqueue call
          to the handler's first line (a timestamp the handler records)

taskgate runs on a fresh PostgreSQL database (its service layer enqueues), Celery
on a Redis database of its own (``--redis-url``, flushed before each phase),
procrastinate on another fresh database of the same PostgreSQL server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

import procrastinate
import psycopg
import redis

import peer_celery
import peer_procrastinate
import peer_stamps
from dispatch import DispatchResult, handler_time
from drain import bench_settings, drain, enqueue
from pgserver import fresh_database, server_url
from probe import Probe
from procs import (
    BENCH_DIR,
    running,
    steal_seconds,
    tail,
    taskgate_cli,
    taskgate_env,
    wait_for,
    work_dir,
)
from taskgate.composition import build
from taskgate.payloads import WorkflowSubmit

ACCOUNT = "bench"
SYSTEMS = ("taskgate", "celery", "procrastinate")
PROCESSES = 2
BATCH = 1000
TARGET_VS_CELERY = 1.0
TARGET_VS_PROCRASTINATE = 3.0
TARGET_DISPATCH_P50_MS = 5.0

Results = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Drain rate and dispatch latency of taskgate, Celery and procrastinate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=20_000, help="no-op tasks to drain")
    parser.add_argument("--samples", type=int, default=200, help="dispatch latency samples")
    parser.add_argument("--warmup-samples", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per drain")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems to run")
    tg = parser.add_argument_group("taskgate")
    tg.add_argument(
        "--taskgate-slots", type=int, default=16, help="worker slots per taskgate worker process"
    )
    cel = parser.add_argument_group("Celery")
    cel.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/13", help="the broker (flushed)"
    )
    cel.add_argument("--celery-pool", default="prefork")
    cel.add_argument(
        "--celery-concurrency", type=int, default=1, help="pool processes per Celery worker"
    )
    cel.add_argument("--celery-prefetch", type=int, default=64, help="worker_prefetch_multiplier")
    pro = parser.add_argument_group("procrastinate")
    pro.add_argument(
        "--procrastinate-concurrency",
        type=int,
        default=10,
        help="jobs at once per procrastinate worker",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "peers.json")
    out.add_argument("--keep", action="store_true", help="keep the data dirs and process logs")
    return parser.parse_args(argv)


def say(text: str = "") -> None:
    print(text, flush=True)


def _bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKGATE_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


def _alive(processes: list[Popen[bytes]]) -> bool:
    for process in processes:
        if process.poll() is not None:
            raise RuntimeError(f"a worker exited (code {process.returncode})")
    return True


def _stamps(
    send: Callable[[], None], reader: peer_stamps.StampReader, *, samples: int, warmup: int
) -> DispatchResult:
    """Dispatch latency: ``send()`` enqueues one task whose handler sends its start
    time to ``reader``; the next goes once that arrived. The first warm-up waits
    for the workers to start."""
    latencies: list[float] = []
    calls: list[float] = []
    for i in range(warmup + samples):
        sent = time.time()
        send()
        returned = time.time()
        stamp = reader.read(timeout=120 if i == 0 else 30)
        if i >= warmup:
            latencies.append((stamp - sent) * 1000)
            calls.append((returned - sent) * 1000)
    return DispatchResult(latencies, calls)


class Peers:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.results: Results = {}
        self.phases: Results = {}
        self.failed: list[str] = []

    def phase(self, name: str, fn: Callable[[], Results]) -> None:
        load = os.getloadavg()[0]
        say(f"\n== {name} (load average {load:.2f})")
        started = time.monotonic()
        steal_before = steal_seconds()
        try:
            self.results[name] = fn()
        except Exception as exc:
            traceback.print_exc()
            say(f"!! {name} failed: {exc}")
            for log in sorted(self.root.glob(f"{name}*.log")):
                say(f"-- last lines of {log.name}:\n{tail(log)}")
            self.results[name] = {"error": str(exc)}
            self.failed.append(name)
        finally:
            stolen = steal_seconds() - steal_before
            self.phases[name] = {
                "load_average": load,
                "seconds": round(time.monotonic() - started, 1),
                "steal_seconds": round(stolen, 2),
            }
            if stolen > 0.5:
                say(f"   (the hypervisor took {stolen:.1f} s of CPU time during this phase)")

    # -- taskgate ----------------------------------------------------------------

    def taskgate(self) -> Results:
        args = self.args
        with fresh_database("taskgate_bench_peers") as url:
            data_dir = self.root / "taskgate"
            data_dir.mkdir()
            taskgate_cli(data_dir, "migrate", database_url=url)
            taskgate_cli(
                data_dir,
                *("accounts", "create", ACCOUNT, "--concurrency"),
                str(max(64, PROCESSES * args.taskgate_slots)),
                database_url=url,
            )
            queued = enqueue(data_dir, ACCOUNT, args.tasks, "bulk", database_url=url)
            say(f"enqueued  {queued.tasks:,} in {queued.seconds:.1f} s (TaskService.submit_many)")
            result = drain(
                data_dir,
                count=args.tasks,
                slots=args.taskgate_slots,
                processes=PROCESSES,
                timeout=args.timeout,
                log_dir=self.root,
                database_url=url,
            )
            say(
                f"drain     {result.rate:,.0f} tasks/s ({result.seconds:.2f} s; "
                f"{result.processes} × {result.slots} slots; {result.wall_seconds:.2f} s "
                "from starting the workers)"
            )
            dispatch = self._taskgate_dispatch(data_dir, url)
            figures = dispatch.to_json()
            return {
                "drain_rate": round(result.rate, 1),
                "drain": result.to_json(),
                "enqueue_seconds": round(queued.seconds, 2),
                "dispatch": figures,
                "config": {"processes": PROCESSES, "slots": args.taskgate_slots},
            }

    def _taskgate_dispatch(self, data_dir: Path, url: str) -> DispatchResult:
        args = self.args
        services = build(bench_settings(data_dir, url, workflows=["bench_workflows"]))
        try:
            with contextlib.ExitStack() as stack:
                reader = peer_stamps.StampReader()
                stack.callback(reader.close)
                for i in range(PROCESSES):
                    stack.enter_context(
                        running(
                            [
                                *(sys.executable, "-m", "taskgate", "worker"),
                                *("--workers", str(args.taskgate_slots)),
                            ],
                            env=taskgate_env(
                                data_dir, database_url=url, BENCH_STAMP_PORT=str(reader.port)
                            ),
                            log_path=self.root / f"taskgate-dispatch-{i + 1}.log",
                        )
                    )
                probe = stack.enter_context(Probe(data_dir, url))
                account_id = services.accounts.find_account(ACCOUNT).id
                request = WorkflowSubmit(input={})

                async def one() -> str:
                    view, _created = await services.tasks.submit(
                        account_id, "bench_stamp", request, None
                    )
                    return str(view.task.id)

                latencies: list[float] = []
                calls: list[float] = []
                loop = asyncio.new_event_loop()
                try:
                    for i in range(args.warmup_samples + args.samples):
                        sent = time.time()
                        task_id = loop.run_until_complete(one())
                        returned = time.time()
                        # The handler's stamp as the peers' arrive (a datagram), then
                        # the task's end, so that the next starts on idle workers;
                        # the task's output holds the same stamp.
                        stamp = reader.read(timeout=120 if i == 0 else 30)
                        recorded = handler_time(probe, task_id)
                        if recorded != stamp:
                            raise RuntimeError(f"task {task_id}: stamp {stamp} ≠ {recorded}")
                        if i >= args.warmup_samples:
                            latencies.append((stamp - sent) * 1000)
                            calls.append((returned - sent) * 1000)
                finally:
                    loop.close()
                return DispatchResult(latencies, calls)
        finally:
            services.close()

    # -- Celery ------------------------------------------------------------------

    def _celery_workers(
        self, stack: contextlib.ExitStack, name: str, *, counts: Path, stamp_port: int = 0
    ) -> list[Popen[bytes]]:
        args = self.args
        counts.mkdir()
        env = _bench_env(
            BENCH_CELERY_BROKER=args.redis_url,
            BENCH_CELERY_PREFETCH=str(args.celery_prefetch),
            BENCH_COUNT_DIR=str(counts),
            BENCH_STAMP_PORT=str(stamp_port),
        )
        return [
            stack.enter_context(
                running(
                    [
                        *(sys.executable, "-m", "celery", "-A", "peer_celery", "worker"),
                        *("--pool", args.celery_pool),
                        *("--concurrency", str(args.celery_concurrency)),
                        *("--hostname", f"bench{i + 1}@%h", "--loglevel", "WARNING"),
                        # No cluster chatter between the two workers.
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    env=env,
                    log_path=self.root / f"celery-{name}-{i + 1}.log",
                )
            )
            for i in range(PROCESSES)
        ]

    def celery(self) -> Results:
        args = self.args
        client = redis.Redis.from_url(args.redis_url)
        app = peer_celery.app
        app.conf.broker_url = args.redis_url
        try:
            client.flushdb()
            started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for _ in range(args.tasks):
                    peer_celery.noop.apply_async(producer=producer)
            enqueue_seconds = time.perf_counter() - started
            queued = int(client.llen("celery"))  # type: ignore[arg-type]
            if queued != args.tasks:
                raise RuntimeError(f"expected {args.tasks} queued messages, found {queued}")
            say(f"enqueued  {args.tasks:,} in {enqueue_seconds:.1f} s (apply_async)")
            counts = self.root / "celery-counts"
            started = time.monotonic()
            with contextlib.ExitStack() as stack:
                workers = self._celery_workers(stack, "drain", counts=counts)

                # Empty queue and no unacknowledged message: every task was taken
                # by a pool process (acknowledged as it starts; a no-op ends at once).
                def drained() -> bool:
                    _alive(workers)
                    return client.llen("celery") == 0 and client.hlen("unacked") == 0

                wait_for(drained, timeout=args.timeout, interval=0.05, what="the Celery drain")
                wall = time.monotonic() - started
            ran, first, last = peer_stamps.read_counts(counts)
            if ran != args.tasks:
                raise RuntimeError(f"{ran} of {args.tasks} Celery tasks ran")
            rate = ran / (last - first)
            say(
                f"drain     {rate:,.0f} tasks/s ({last - first:.2f} s; {PROCESSES} workers, "
                f"pool {args.celery_pool} × {args.celery_concurrency}, prefetch multiplier "
                f"{args.celery_prefetch}; {wall:.2f} s from starting the workers)"
            )
            client.flushdb()
            dispatch = self._celery_dispatch()
            return {
                "drain_rate": round(rate, 1),
                "drain": {"tasks": ran, "seconds": round(last - first, 3), "wall_seconds": wall},
                "enqueue_seconds": round(enqueue_seconds, 2),
                "dispatch": dispatch.to_json(),
                "config": {
                    "processes": PROCESSES,
                    "pool": args.celery_pool,
                    "concurrency": args.celery_concurrency,
                    "prefetch_multiplier": args.celery_prefetch,
                },
            }
        finally:
            client.flushdb()
            client.close()

    def _celery_dispatch(self) -> DispatchResult:
        reader = peer_stamps.StampReader()
        try:
            with contextlib.ExitStack() as stack:
                self._celery_workers(
                    stack,
                    "dispatch",
                    counts=self.root / "celery-dispatch-counts",
                    stamp_port=reader.port,
                )
                return _stamps(
                    lambda: peer_celery.stamp.apply_async(),
                    reader,
                    samples=self.args.samples,
                    warmup=self.args.warmup_samples,
                )
        finally:
            reader.close()

    # -- procrastinate -----------------------------------------------------------

    def _procrastinate_workers(
        self, stack: contextlib.ExitStack, name: str, url: str, **extra: str
    ) -> list[Popen[bytes]]:
        env = _bench_env(BENCH_PROCRASTINATE_DSN=url, **extra)
        return [
            stack.enter_context(
                running(
                    [
                        *(sys.executable, "-m", "procrastinate"),
                        *("--app", "peer_procrastinate.app", "worker"),
                        *("--concurrency", str(self.args.procrastinate_concurrency)),
                    ],
                    env=env,
                    log_path=self.root / f"procrastinate-{name}-{i + 1}.log",
                )
            )
            for i in range(PROCESSES)
        ]

    def procrastinate(self) -> Results:
        args = self.args
        with (
            fresh_database("procrastinate_bench") as url,
            peer_procrastinate.app.replace_connector(
                procrastinate.PsycopgConnector(conninfo=url)
            ) as app,
        ):
            noop = peer_procrastinate.noop
            stamp = peer_procrastinate.stamp

            async def prepare() -> float:
                async with app.open_async():
                    await app.schema_manager.apply_schema_async()
                    started = time.perf_counter()
                    left = args.tasks
                    while left > 0:
                        n = min(BATCH, left)
                        await noop.batch_defer_async(*[{}] * n)
                        left -= n
                    return time.perf_counter() - started

            enqueue_seconds = asyncio.run(prepare())
            say(f"enqueued  {args.tasks:,} in {enqueue_seconds:.1f} s (batch_defer_async)")
            with psycopg.connect(url, autocommit=True) as conn:

                def left() -> int:
                    row = conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                    ).fetchone()
                    return int(row[0]) if row else -1

                if left() != args.tasks:
                    raise RuntimeError(f"expected {args.tasks} jobs to do, found {left()}")
                started = time.monotonic()
                with contextlib.ExitStack() as stack:
                    workers = self._procrastinate_workers(stack, "drain", url)
                    wait_for(
                        lambda: _alive(workers) and left() == 0,
                        timeout=args.timeout,
                        interval=0.1,
                        what="the procrastinate drain",
                    )
                    wall = time.monotonic() - started
                row = conn.execute(
                    "SELECT min(at) FILTER (WHERE type = 'started'),"
                    " max(at) FILTER (WHERE type = 'succeeded'),"
                    " count(*) FILTER (WHERE type = 'succeeded') FROM procrastinate_events"
                ).fetchone()
                assert row is not None
                first, last, succeeded = row
            if succeeded != args.tasks:
                raise RuntimeError(f"{succeeded} of {args.tasks} procrastinate jobs succeeded")
            seconds = (last - first).total_seconds()
            rate = succeeded / seconds
            say(
                f"drain     {rate:,.0f} tasks/s ({seconds:.2f} s; {PROCESSES} workers × "
                f"concurrency {args.procrastinate_concurrency}; {wall:.2f} s from starting "
                "the workers)"
            )

            reader = peer_stamps.StampReader()
            try:
                with contextlib.ExitStack() as stack:
                    self._procrastinate_workers(
                        stack, "dispatch", url, BENCH_STAMP_PORT=str(reader.port)
                    )

                    async def measure() -> DispatchResult:
                        async with app.open_async():
                            loop = asyncio.get_running_loop()
                            latencies: list[float] = []
                            calls: list[float] = []
                            for i in range(args.warmup_samples + args.samples):
                                sent = time.time()
                                await stamp.defer_async()
                                returned = time.time()
                                handler = await loop.run_in_executor(
                                    None, reader.read, 120 if i == 0 else 30
                                )
                                if i >= args.warmup_samples:
                                    latencies.append((handler - sent) * 1000)
                                    calls.append((returned - sent) * 1000)
                            return DispatchResult(latencies, calls)

                    dispatch = asyncio.run(measure())
            finally:
                reader.close()
            return {
                "drain_rate": round(rate, 1),
                "drain": {"tasks": succeeded, "seconds": round(seconds, 3), "wall_seconds": wall},
                "enqueue_seconds": round(enqueue_seconds, 2),
                "dispatch": dispatch.to_json(),
                "config": {
                    "processes": PROCESSES,
                    "concurrency": args.procrastinate_concurrency,
                },
            }

    # -- report ------------------------------------------------------------------

    def report(self) -> None:
        def rate(name: str) -> float | None:
            value = self.results.get(name, {}).get("drain_rate")
            return float(value) if value else None

        celery, procrastinate_rate = rate("celery"), rate("procrastinate")
        say("\n== summary")
        say(
            f"{'system':<15}{'drain tasks/s':>14}{'÷ Celery':>10}{'÷ procrastinate':>17}"
            f"{'dispatch p50':>14}{'p99':>11}"
        )
        for name in SYSTEMS:
            data = self.results.get(name)
            if data is None:
                continue
            if "error" in data:
                say(f"{name:<15}FAILED: {data['error']}")
                continue
            own = float(data["drain_rate"])
            vs_celery = f"{own / celery:.2f}×" if celery else "–"
            vs_pro = f"{own / procrastinate_rate:.2f}×" if procrastinate_rate else "–"
            dispatch = data["dispatch"]
            say(
                f"{name:<15}{own:>14,.0f}{vs_celery:>10}{vs_pro:>17}"
                f"{dispatch['p50_ms']:>11.2f} ms{dispatch['p99_ms']:>8.2f} ms"
            )
        ours = self.results.get("taskgate", {})
        if "drain_rate" in ours:
            own = float(ours["drain_rate"])
            if celery:
                met = own >= TARGET_VS_CELERY * celery
                say(f"target taskgate ≥ 1.0× Celery: {'met' if met else 'MISSED'}")
            if procrastinate_rate:
                met = own >= TARGET_VS_PROCRASTINATE * procrastinate_rate
                say(f"target taskgate ≥ 3× procrastinate: {'met' if met else 'MISSED'}")
            met = ours["dispatch"]["p50_ms"] <= TARGET_DISPATCH_P50_MS
            say(f"target taskgate dispatch p50 ≤ 5 ms: {'met' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    say(f"PostgreSQL server: {server_url()}; Redis broker: {args.redis_url}")
    with work_dir("taskgate-peers-", args.keep) as root:
        peers = Peers(args, root)
        for name in SYSTEMS:
            if name in chosen:
                peers.phase(name, getattr(peers, name))
        peers.report()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average": os.getloadavg(),
            },
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": peers.results,
            "phases": peers.phases,
            "failed": peers.failed,
        }
        args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
        say(f"\nresults written to {args.output}")
        return 1 if peers.failed else 0


if __name__ == "__main__":
    sys.exit(main())
