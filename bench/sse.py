"""Event streams under load: ``python bench/sse.py``.

Opens S server-sent event streams (``GET /v1/events``, the account stream) on one
``taskgate serve`` process, confirms every one got its 200 and stays open, then
submits ``wait`` tasks (0 s) at a steady rate. The server's worker runs them; each
task writes ``task.created`` (the API, on submit), ``task.started`` and
``task.completed`` (the worker), and the API's EventHub reads them and pushes them to
every stream of the task's account. For each event each stream receives, the latency
is the client's receive time minus the event's ``created_at`` (stamped in the
transaction that commits it; same machine clock).

Two phases on fresh servers: a baseline with few streams (``--baseline-streams``),
then the load (``--streams``); the report gives both and their ratios, the server's
CPU time and memory, and whether the target (all streams held, p99 ≤ 200 ms) is met.
The client is raw asyncio protocols (no HTTP library) on uvloop when installed, so
that 5,000 streams cost the bench as little CPU as possible: it shares the machine's
cores with the server. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx

from procs import (
    BENCH_DIR,
    HOST,
    answers,
    free_port,
    running,
    steal_seconds,
    tail,
    taskgate_env,
    work_dir,
)
from procs import wait_for as wait_until
from taskgate.composition import build
from taskgate.settings import Settings
from taskgate.store import migrate

TARGET_STREAMS = 5000
TARGET_P99_MS = 200.0
SUBMIT_BODY = json.dumps({"workflow": "wait", "input": {"seconds": 0}}).encode()
EVENTS_PER_TASK = 3  # task.created, task.started, task.completed
_CREATED = b'"created_at":"'
_TYPE = b'"type":"'
_ID = b'"id":"'

Results = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Latency from commit to client of events on many SSE streams.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load = parser.add_argument_group("load")
    load.add_argument("--streams", type=int, default=TARGET_STREAMS, help="streams of the load")
    load.add_argument(
        "--baseline-streams", type=int, default=10, help="streams of the baseline (0: none)"
    )
    load.add_argument(
        "--accounts",
        type=int,
        default=1,
        help="accounts the streams (and tasks) are spread over, round robin; with 1 every "
        "stream receives every event",
    )
    load.add_argument(
        "--tasks", type=int, default=30, help=f"tasks submitted ({EVENTS_PER_TASK} events each)"
    )
    load.add_argument("--rate", type=float, default=1.0, help="tasks submitted per second")
    load.add_argument("--workers", type=int, default=2, help="worker slots of the server")
    load.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="API processes of the server (serve --api-processes); the API figures are "
        "the first one's, the others count among its children",
    )
    load.add_argument(
        "--open-concurrency", type=int, default=200, help="streams being opened at once"
    )
    load.add_argument(
        "--settle", type=float, default=3.0, help="seconds between opening and submitting"
    )
    load.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the last deliveries after the last submit",
    )
    load.add_argument(
        "--nofile", type=int, default=20_000, help="soft RLIMIT_NOFILE of bench and server"
    )
    prof = parser.add_argument_group("profile")
    prof.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy while the load's events flow",
    )
    prof.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy binary")
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "sse.json")
    out.add_argument("--keep", action="store_true", help="keep the data dirs and process logs")
    return parser.parse_args(argv)


def say(text: str = "") -> None:
    print(text, flush=True)


# -- limits and /proc ------------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_nofile(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_calls(pid: int) -> int:
    """Write system calls a process made so far (``syscw`` of /proc/<pid>/io): on the
    API process, mostly one per write to a stream's socket."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscw:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                todo.extend(children)
    return found


def machine_busy_seconds() -> float:
    """CPU time of the whole machine spent on anything but idling (/proc/stat), in
    seconds summed over all CPUs."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal …; guest time is within user.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    """CPU seconds of the API process, of its children (worker and slots), of the bench
    itself and of the whole machine."""

    api: float
    children: float
    client: float
    machine: float
    steal: float
    wall: float
    api_writes: int

    @classmethod
    def now(cls, pid: int) -> Usage:
        kids = sum(cpu_seconds(child) for child in descendants(pid))
        return cls(
            cpu_seconds(pid),
            kids,
            client_cpu(),
            machine_busy_seconds(),
            steal_seconds(),
            time.monotonic(),
            write_calls(pid),
        )

    def since(self, before: Usage) -> dict[str, float]:
        wall = self.wall - before.wall
        api = self.api - before.api
        ours = api + self.children - before.children + self.client - before.client
        machine = self.machine - before.machine - (self.steal - before.steal)
        return {
            "machine_cpus_busy": round(machine / wall, 2) if wall else 0.0,
            "other_processes_cpus": round((machine - ours) / wall, 2) if wall else 0.0,
            "seconds": round(wall, 2),
            "api_cpu_seconds": round(api, 2),
            "api_cpu_share": round(api / wall, 3) if wall else 0.0,
            "children_cpu_seconds": round(self.children - before.children, 2),
            "steal_seconds": round(self.steal - before.steal, 2),
            "api_write_calls": self.api_writes - before.api_writes,
        }


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the client ---------------------------------------------------------------------


@dataclass
class Deliveries:
    """What every stream received: latency per delivery, by event type, and when each
    event reached its first and last stream."""

    latencies: dict[str, array[float]] = field(default_factory=dict)
    spread: dict[bytes, list[float]] = field(default_factory=dict)
    count: int = 0
    _epoch: dict[bytes, float] = field(default_factory=dict)

    def record(self, message: bytes | bytearray, received: float) -> None:
        start = message.find(_CREATED)
        if start < 0:
            return  # a keep-alive comment
        start += len(_CREATED)
        stamp = bytes(message[start : message.index(b'"', start)])
        created = self._epoch.get(stamp)
        if created is None:
            created = datetime.fromisoformat(stamp.decode()).timestamp()
            self._epoch[stamp] = created
        type_start = message.find(_TYPE) + len(_TYPE)
        kind = bytes(message[type_start : message.index(b'"', type_start)]).decode()
        id_start = message.find(_ID) + len(_ID)
        event_id = bytes(message[id_start : message.index(b'"', id_start)])
        self.latencies.setdefault(kind, array("d")).append(received - created)
        seen = self.spread.get(event_id)
        if seen is None:
            self.spread[event_id] = [received, received, 1.0]
        else:
            seen[1] = received
            seen[2] += 1
        self.count += 1


class StreamProtocol(asyncio.Protocol):
    """One ``GET`` of an event stream over HTTP/1.1: the status, then chunked SSE."""

    def __init__(self, request: bytes, sink: Deliveries) -> None:
        self.request = request
        self.sink = sink
        self.status: int | None = None
        self.received = 0
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._raw = bytearray()
        self._body = bytearray()
        self._chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        raw = self._raw
        raw += data
        if self.status is None:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).decode("latin-1").lower()
            del raw[: end + 4]
            self.status = int(head.split(None, 2)[1])
            self._chunked = "transfer-encoding: chunked" in head
            if not self.opened.done():
                self.opened.set_result(self.status)
        if self._chunked:
            while True:
                line_end = raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(raw[:line_end]).split(b";", 1)[0], 16)
                if len(raw) < line_end + 2 + size + 2:
                    break
                self._body += raw[line_end + 2 : line_end + 2 + size]
                del raw[: line_end + 2 + size + 2]
        else:
            self._body += raw
            raw.clear()
        body = self._body
        while (end := body.find(b"\r\n\r\n")) >= 0:
            if body.startswith((b"event:", b"data:", b"id:")):
                self.sink.record(body[:end], now)
                self.received += 1
            del body[: end + 4]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the headers: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_stream(port: int, key: str, sink: Deliveries) -> StreamProtocol:
    request = (
        f"GET /v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(
        lambda: StreamProtocol(request, sink), HOST, port
    )
    return protocol


async def open_streams(
    port: int, keys: list[str], count: int, concurrency: int, sink: Deliveries
) -> tuple[list[StreamProtocol], int, float]:
    """Open ``count`` streams, key i % len(keys); return them, failures and seconds."""
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(index: int) -> StreamProtocol | None:
        async with gate:
            try:
                protocol = await open_stream(port, keys[index % len(keys)], sink)
                status = await asyncio.wait_for(protocol.opened, 60)
            except (OSError, ConnectionError, TimeoutError):
                return None
            if status != 200:
                protocol.close()
                return None
            return protocol

    opened = await asyncio.gather(*(one(i) for i in range(count)))
    streams = [p for p in opened if p is not None]
    return streams, count - len(streams), time.monotonic() - started


async def loop_lag(stop: asyncio.Event, samples: list[float], interval: float = 0.01) -> None:
    """How late the client's loop wakes up: its own delay in every latency."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(interval)
        samples.append(loop.time() - before - interval)


@dataclass
class Submitted:
    accepted: int
    failed: int
    seconds: float
    #: From sending each POST to its answer.
    latencies: array[float]


async def submit_tasks(base: str, keys: list[str], tasks: int, rate: float) -> Submitted:
    """Submit ``tasks`` tasks at ``rate`` per second (key i % len(keys)), without
    waiting for one answer before the next."""
    latencies = array("d")
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:

        async def one(index: int) -> bool:
            headers = {
                "Authorization": f"Bearer {keys[index % len(keys)]}",
                "Content-Type": "application/json",
            }
            sent = time.monotonic()
            try:
                response = await client.post("/v1/tasks", content=SUBMIT_BODY, headers=headers)
            except httpx.HTTPError:
                return False
            latencies.append(time.monotonic() - sent)
            return response.status_code in (200, 201, 202)

        started = time.monotonic()
        pending: list[asyncio.Task[bool]] = []
        for index in range(tasks):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(index)))
        results = await asyncio.gather(*pending)
        seconds = time.monotonic() - started
    accepted = sum(results)
    return Submitted(accepted, tasks - accepted, seconds, latencies)


async def warm_up(base: str, key: str) -> None:
    """One task, run to its end before any stream opens: the server's and the worker's
    first request, import and run are not measured, and its events reach no stream."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        response = await client.post("/v1/tasks", content=SUBMIT_BODY)
        response.raise_for_status()
        task_id = response.json()["id"]
        for _ in range(600):
            if (await client.get(f"/v1/tasks/{task_id}")).json()["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        else:
            raise TimeoutError("the warm-up task did not complete in 60 s")
    await asyncio.sleep(0.5)


# -- the server ---------------------------------------------------------------------


def make_data_dir(path: Path, accounts: int, concurrency: int) -> list[str]:
    """A fresh data dir with ``accounts`` accounts (credits, concurrency) and a key each."""
    path.mkdir()
    services = build(Settings(data_dir=path, database_url=None, workflows=[]))
    try:
        migrate.upgrade(services.db)
        keys: list[str] = []
        for index in range(accounts):
            name = f"bench-{index}"
            services.accounts.create_account(name, credits="1000000", concurrency=concurrency)
            keys.append(services.accounts.create_key(name)[1])
        return keys
    finally:
        services.close()


@dataclass
class Phase:
    name: str
    streams: int
    args: argparse.Namespace
    root: Path
    results: Results = field(default_factory=dict)

    def run(self) -> Results:
        args = self.args
        data_dir = self.root / self.name
        keys = make_data_dir(data_dir, args.accounts, max(64, args.workers))
        port = free_port()
        base = f"http://{HOST}:{port}"
        log_path = self.root / f"serve-{self.name}.log"
        command = [
            sys.executable,
            "-m",
            "taskgate",
            "serve",
            "--no-access-log",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--api-processes",
            str(args.api_processes),
        ]
        with running(command, env=taskgate_env(data_dir), log_path=log_path) as server:
            try:
                wait_until(
                    lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server
                )
                return asyncio_run(self._measure(server.pid, port, keys))
            except Exception:
                say(f"-- last lines of {log_path.name}:\n{tail(log_path)}")
                raise

    async def _measure(self, pid: int, port: int, keys: list[str]) -> Results:
        args = self.args
        base = f"http://{HOST}:{port}"
        r: Results = {"streams_wanted": self.streams, "server_nofile": proc_nofile(pid)}
        await warm_up(base, keys[0])
        rss_before = rss_mib(pid)

        sink = Deliveries()
        before_open = Usage.now(pid)
        streams, failed, open_seconds = await open_streams(
            port, keys, self.streams, args.open_concurrency, sink
        )
        if not streams:
            raise RuntimeError(f"none of the {self.streams} streams opened")
        await asyncio.sleep(args.settle)
        opened = Usage.now(pid)
        held_before = sum(not p.closed.done() for p in streams)
        rss_held = rss_mib(pid)
        r.update(
            {
                "streams_opened": len(streams),
                "streams_failed": failed,
                "open_seconds": round(open_seconds, 2),
                "held_before_events": held_before,
                "rss_mib_before": round(rss_before, 1),
                "rss_mib_held": round(rss_held, 1),
                "rss_kib_per_stream": round(
                    (rss_held - rss_before) * 1024 / max(1, len(streams)), 1
                ),
                "opening": opened.since(before_open),
            }
        )
        say(
            f"   {len(streams):,} streams opened in {open_seconds:.1f} s ({failed} failed), "
            f"{held_before:,} held after {args.settle:g} s; RSS {rss_before:.0f} → "
            f"{rss_held:.0f} MiB"
        )

        per_account = [0] * len(keys)
        for index in range(len(streams)):
            per_account[index % len(keys)] += 1
        tasks_per_account = [
            args.tasks // len(keys) + (1 if a < args.tasks % len(keys) else 0)
            for a in range(len(keys))
        ]
        # Streams were opened key i % len(keys): the i-th stream follows account i % n.
        expected = EVENTS_PER_TASK * sum(
            n * t for n, t in zip(per_account, tasks_per_account, strict=True)
        )

        profiler = self._profile(pid, args.tasks / args.rate + 2)
        lag: list[float] = []
        stop_lag = asyncio.Event()
        lag_task = asyncio.create_task(loop_lag(stop_lag, lag))
        cpu_before = client_cpu()
        start = Usage.now(pid)
        submitted = await submit_tasks(base, keys, args.tasks, args.rate)
        deadline = time.monotonic() + args.drain_timeout
        last, last_change = sink.count, time.monotonic()
        while sink.count < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if sink.count != last:
                last, last_change = sink.count, time.monotonic()
            elif time.monotonic() - last_change > 10:
                break  # nothing for 10 s: what is missing will not come
        end = Usage.now(pid)
        stop_lag.set()
        await lag_task
        client_seconds = client_cpu() - cpu_before
        held_after = sum(not p.closed.done() for p in streams)
        rss_end = rss_mib(pid)
        for protocol in streams:
            protocol.close()
        profile = self._profile_result(profiler)

        everything = array("d")
        by_type: dict[str, Any] = {}
        for kind, values in sorted(sink.latencies.items()):
            everything.extend(values)
            by_type[kind] = {"deliveries": len(values), **percentiles(values)}
        spreads = array("d", (hi - lo for lo, hi, _n in sink.spread.values()))
        usage = end.since(start)
        r.update(
            {
                "held_after_events": held_after,
                "tasks_submitted": submitted.accepted,
                "tasks_rejected": submitted.failed,
                "submit_seconds": round(submitted.seconds, 2),
                "submit_latency_ms": percentiles(submitted.latencies),
                "events": len(sink.spread),
                "deliveries_expected": expected,
                "deliveries": sink.count,
                "events_per_stream": round(sink.count / max(1, len(streams)), 1),
                "deliveries_per_second": round(sink.count / usage["seconds"], 1),
                "latency_ms": percentiles(everything),
                "latency_ms_by_type": by_type,
                "fanout_spread_ms": percentiles(spreads),
                "events_phase": usage,
                "api_cpu_us_per_delivery": round(
                    usage["api_cpu_seconds"] * 1e6 / max(1, sink.count), 1
                ),
                # Each task's events to each stream: 1.0 when they leave in one write.
                "api_writes_per_stream_task": round(
                    usage["api_write_calls"] / max(1, len(streams) * submitted.accepted), 2
                ),
                "rss_mib_end": round(rss_end, 1),
                "client": {
                    "cpu_seconds": round(client_seconds, 2),
                    "cpu_share": round(client_seconds / usage["seconds"], 3),
                    "loop_lag_ms": percentiles(array("d", lag)),
                },
            }
        )
        if profile is not None:
            r["profile"] = profile
        return r

    def _profile(self, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
        if not self.args.profile or self.streams != self.args.streams:
            return None
        if not self.args.py_spy:
            say("   (no py-spy: not profiling; pip install py-spy)")
            return None
        out = self.root / f"profile-{self.name}.txt"
        return subprocess.Popen(
            [
                self.args.py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "py-spy.log").open("wb"),
        )

    def _profile_result(self, profiler: subprocess.Popen[bytes] | None) -> Results | None:
        if profiler is None:
            return None
        try:
            profiler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()
        path = self.root / f"profile-{self.name}.txt"
        if not path.exists():
            say(f"   py-spy wrote nothing:\n{tail(self.root / 'py-spy.log')}")
            return None
        summary = summarize_profile(path.read_text())
        if self.args.keep:
            summary["raw"] = str(path)
        return summary


def summarize_profile(raw: str, top: int = 25) -> Results:
    """From py-spy's collapsed stacks: the share of samples in each function (self) and
    under each function (inclusive; idle samples excluded)."""
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            under[name] = under.get(name, 0) + count

    def ranked(table: dict[str, int]) -> list[list[Any]]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [[name, round(n / total, 3)] for name, n in best]

    return {"samples": total, "self": ranked(own), "inclusive": ranked(under)}


def _frame(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({'/'.join(Path(file).parts[-2:])})" if file else name


def percentiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "n": len(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 2),
    }


def asyncio_run(coro: Coroutine[Any, Any, Results]) -> Results:
    """Run on uvloop when it is installed (less CPU per stream for the client)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- the report ---------------------------------------------------------------------


def report(results: Results, args: argparse.Namespace) -> bool | None:
    """Print the phases side by side; return whether the target is met (None: no load)."""
    names = [n for n in ("baseline", "load") if "latency_ms" in results.get(n, {})]
    if not names:
        return None
    say("\n== summary")
    say(
        f"{'':<30}" + "".join(f"{n:>14}" for n in names) + ("     ratio" if len(names) == 2 else "")
    )

    def row(label: str, get: Callable[[Results], float | int | None], fmt: str = ",.1f") -> None:
        values = [get(results[n]) for n in names]
        cells = "".join(f"{'-' if v is None else format(v, fmt):>14}" for v in values)
        ratio = ""
        if len(values) == 2 and values[0] and values[1] is not None:
            ratio = f"{values[1] / values[0]:>9.1f}x"
        say(f"{label:<30}{cells} {ratio}")

    row("streams opened", lambda r: r["streams_opened"], ",d")
    row("streams held (after events)", lambda r: r["held_after_events"], ",d")
    row("events", lambda r: r["events"], ",d")
    row("events per stream", lambda r: r["events_per_stream"])
    row("deliveries", lambda r: r["deliveries"], ",d")
    row("deliveries/s", lambda r: r["deliveries_per_second"], ",.0f")
    for q in ("p50", "p90", "p99", "max"):
        row(f"latency {q} ms", _pick("latency_ms", q), ",.1f")
    for kind in ("task.created", "task.started", "task.completed"):
        row(
            f"  {kind} p99 ms",
            _pick("latency_ms_by_type", kind, "p99"),
            ",.1f",
        )
    row("fan-out spread p99 ms", lambda r: r["fanout_spread_ms"].get("p99"), ",.1f")
    row("POST /v1/tasks p99 ms", _pick("submit_latency_ms", "p99"), ",.1f")
    row("API CPU share (events)", lambda r: r["events_phase"]["api_cpu_share"], ".2f")
    row("API CPU µs per delivery", lambda r: r["api_cpu_us_per_delivery"], ",.1f")
    row("API writes per stream per task", lambda r: r["api_writes_per_stream_task"], ".2f")
    row("worker CPU s (events)", lambda r: r["events_phase"]["children_cpu_seconds"], ".2f")
    row("client CPU share", lambda r: r["client"]["cpu_share"], ".2f")
    row("client loop lag p99 ms", lambda r: r["client"]["loop_lag_ms"].get("p99"), ",.1f")
    row("API RSS MiB (held)", lambda r: r["rss_mib_held"], ",.0f")
    row("RSS KiB per stream", lambda r: r["rss_kib_per_stream"], ",.1f")
    row("other processes' CPUs", lambda r: r["events_phase"]["other_processes_cpus"], ".2f")
    row("steal s (events)", lambda r: r["events_phase"]["steal_seconds"], ".2f")

    load = results.get("load", {})
    if "latency_ms" not in load:
        return None
    held_ok = (
        load["streams_wanted"] >= TARGET_STREAMS and load["held_after_events"] >= TARGET_STREAMS
    )
    p99 = load["latency_ms"].get("p99", float("inf"))
    complete = load["deliveries"] >= load["deliveries_expected"]
    met = bool(held_ok and complete and p99 <= TARGET_P99_MS)
    say(
        f"\ntarget {TARGET_STREAMS:,} streams held, p99 ≤ {TARGET_P99_MS:g} ms: "
        f"{'met' if met else 'MISSED'} ({load['held_after_events']:,} held, p99 {p99:,.1f} ms"
        f"{'' if complete else ', deliveries missing'})"
    )
    if not complete:
        say(
            f"   {load['deliveries_expected'] - load['deliveries']:,} of "
            f"{load['deliveries_expected']:,} expected deliveries never arrived"
        )
    steal = load["events_phase"]["steal_seconds"]
    if steal > 0.5:
        say(f"   (the hypervisor took {steal:.1f} s of CPU time while the events flowed)")
    if "profile" in load:
        say("\n== where the API process spends its time (py-spy, share of samples)")
        for name, share in load["profile"]["self"][:15]:
            say(f"   self {share:6.1%}  {name}")
    return met


def _pick(*path: str) -> Callable[[Results], Any]:
    """A getter of ``results[path[0]][path[1]]…`` (None where missing)."""

    def get(results: Results) -> Any:
        value: Any = results
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return get


def write_results(path: Path, args: argparse.Namespace, results: Results, met: bool | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": {"streams": TARGET_STREAMS, "p99_ms_max": TARGET_P99_MS},
        "target_met": met,
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    say(f"\nresults written to {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile(args.nofile)
    needed = max(args.streams, args.baseline_streams) + 200
    if nofile < needed:
        say(
            f"RLIMIT_NOFILE is {nofile}, under the {needed} the streams need (raise the hard limit)"
        )
        return 1
    results: Results = {}
    failed = False
    with work_dir("taskgate-sse-", args.keep) as root:
        phases = [("baseline", args.baseline_streams), ("load", args.streams)]
        for name, streams in phases:
            if streams <= 0:
                continue
            load = os.getloadavg()[0]
            say(f"\n== {name}: {streams:,} streams (load average {load:.2f}, nofile {nofile})")
            try:
                results[name] = {"load_average": load, **Phase(name, streams, args, root).run()}
            except Exception as exc:
                say(f"!! {name} failed: {exc!r}")
                results[name] = {"error": repr(exc)}
                failed = True
        met = report(results, args)
        write_results(args.output, args, results, met)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
