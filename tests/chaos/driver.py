"""One chaos run: taskgate on PostgreSQL with API and worker nodes in separate
processes, a client recording every acknowledged submission, and a schedule of
faults — ``kill -9`` of a random worker every few seconds, ``kill -9`` of an API
node during a submit burst, a PostgreSQL outage — each repaired at once (the
process started again, the database reopened). Once the work has settled, the
database and the webhook receiver are checked against the client's record, and
``taskgate doctor`` must pass.

``run(ChaosPlan(...), run_dir)`` returns a ``ChaosReport``: the figures, and the
problems found (none, when taskgate came through). The CI test and
``bench/chaos.py`` both call it.

The database is on a PostgreSQL cluster made for the run (``tests/pgcluster.py``),
and the outage is a real restart of it: the server is stopped, every connection
drops, none can be made for ``outage_seconds``, and it is started again.
``ChaosPlan.outage`` picks another kind of outage on a server given by URL, which
may be shared with other work (see ``cluster.OutageKind``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from taskgate.services.accounts import AccountService
from taskgate.store import migrate
from taskgate.store.db import Database
from tests.acceptance.receiver import Receiver
from tests.chaos import checks
from tests.chaos.client import Client
from tests.chaos.cluster import (
    Node,
    Outage,
    OutageKind,
    RefusedConnections,
    alarm_lines,
    api_node,
    node_env,
    private_restart,
    run_cli,
    shared_restart,
    worker_node,
)
from tests.databases import PostgresServer, server_url
from tests.helpers import wait_until
from tests.pgcluster import PrivateCluster


@dataclass(frozen=True)
class ChaosPlan:
    """What a run does. The faults are spread over ``worker_kills × kill_interval``
    seconds; the tasks are submitted over the same time, the bursts aside."""

    tasks: int = 200
    worker_kills: int = 3
    api_kills: int = 1
    outages: int = 1
    api_nodes: int = 2
    worker_nodes: int = 4
    slots: int = 2
    kill_interval: float = 4.0
    outage_seconds: float = 3.0
    #: Tasks submitted at once around each API kill (taken from ``tasks``).
    burst: int = 40
    #: ``private``: the run's own cluster, restarted for real; ``simulated`` or
    #: ``shared`` on the server ``run`` is given (see ``cluster.OutageKind``).
    outage: OutageKind = "private"
    client_threads: int = 8
    #: How long the client keeps retrying one request before giving it up.
    give_up_after: float = 60.0
    #: How long to wait, after the last fault, for the work to settle.
    settle_timeout: float = 60.0
    seed: int | None = None
    keep_database: bool = False


@dataclass
class ChaosReport:
    plan: ChaosPlan
    run_dir: Path
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Lines of the process logs worth reading (tracebacks), by node.
    evidence: dict[str, list[str]] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"chaos run in {self.run_dir}"]
        width = max(len(name) for name in self.figures) if self.figures else 0
        for name, value in self.figures.items():
            lines.append(f"  {name:<{width}}  {_show(value)}")
        lines.append(f"  {'problems':<{width}}  {len(self.problems) or 'none'}")
        lines.extend(f"    - {problem}" for problem in self.problems)
        for node, found in self.evidence.items():
            lines.append(f"  log of {node}:")
            lines.extend(f"    | {line}" for line in found)
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_show(v)}" for k, v in value.items()) or "-"
    return str(value)


def schedule(plan: ChaosPlan) -> list[tuple[float, str]]:
    """When each fault happens, in seconds from the start of the chaos: worker kills
    every ``kill_interval``, the API kills and outages spread between them."""
    duration = max(plan.worker_kills, 1) * plan.kill_interval
    faults = [((i + 0.5) * plan.kill_interval, "worker") for i in range(plan.worker_kills)]
    apis, outages = ["api"] * plan.api_kills, ["outage"] * plan.outages
    order: list[str] = []
    # Alternated, so that no API kill waits behind all the outages.
    while apis or outages:
        order.extend(kinds.pop() for kinds in (apis, outages) if kinds)
    for n, kind in enumerate(order):
        faults.append((duration * (n + 1) / (len(order) + 1) + plan.kill_interval / 4, kind))
    return sorted(faults)


class _Run:
    def __init__(self, plan: ChaosPlan, run_dir: Path) -> None:
        self.plan = plan
        self.run_dir = run_dir
        #: Seconds to make and start the run's own cluster (None: a given server).
        self.cluster_setup: float | None = None
        self.rng = random.Random(plan.seed)
        self.report = ChaosReport(plan, run_dir)
        self.apis: list[Node] = []
        self.workers: list[Node] = []
        self.kills: Counter[str] = Counter()
        self.outage_time = 0.0
        self.recoveries: dict[str, list[float | None]] = {}
        self.recovery_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.client: Client | None = None
        self.api_key = ""

    @property
    def nodes(self) -> list[Node]:
        return self.apis + self.workers

    # -- faults -------------------------------------------------------------------

    def kill_worker(self) -> None:
        """Kill a worker that is at work (killing one still starting up tests less),
        and start it again."""
        ready = wait_until(
            lambda: [n for n in self.workers if n.ready()],
            timeout=60,
            interval=0.05,
            message="a worker to be up",
        )
        node = self.rng.choice(ready)
        node.kill9()
        self.kills["worker"] += 1
        node.start()
        self._time_recovery("worker", time.monotonic(), node, through=None)

    def kill_api(self) -> None:
        """Kill an API node while a burst of submissions is in flight."""
        assert self.client is not None
        before = self.client.acked(burst=True)
        self.client.plan(self.plan.burst, burst=True)
        # In the middle of the burst: some of it acknowledged, more in flight.
        wait_until(
            lambda: (
                self.client is not None
                and self.client.acked(burst=True) - before >= max(1, self.plan.burst // 4)
            ),
            timeout=30,
            interval=0.005,
            message="the burst to get going",
        )
        node = self.rng.choice(self.apis)
        node.kill9()
        self.kills["api"] += 1
        node.start()
        self._time_recovery("api", time.monotonic(), node, through=node)

    def outage(self, outage: Outage) -> None:
        """PostgreSQL away for ``outage_seconds``, then back and serving."""
        started = time.monotonic()
        outage.begin()
        try:
            # How long the fault lasts: not a wait for some state.
            threading.Event().wait(max(0.0, started + self.plan.outage_seconds - time.monotonic()))
        finally:
            outage.end()
        self.kills["postgresql_outage"] += 1
        repaired = time.monotonic()
        self.outage_time += repaired - started
        self._time_recovery("outage", repaired)

    def _time_recovery(
        self, kind: str, since: float, node: Node | None = None, *, through: Node | None = None
    ) -> None:
        """In the background: the time from ``since`` until the restarted ``node``
        serves again and then a probe task (submitted ahead of the queue, through the
        API node ``through`` or any) completes."""

        def measure() -> None:
            took: float | None = None
            starts = node.starts if node is not None else 0

            def up_or_gone() -> str | None:
                assert node is not None
                if node.starts != starts or not node.alive():
                    return "gone"
                return "up" if node.ready() else None

            try:
                if node is not None and (
                    wait_until(up_or_gone, timeout=60, interval=0.02, message=f"{node.name} up")
                    == "gone"
                ):
                    # Killed again, or exited on its own (a problem reported as such).
                    return
                assert self.client is not None
                probe = self.client.probe(through.base_url if through is not None else None)
                if probe.task_id is not None:
                    wait_until(
                        lambda: self._ended(probe.task_id or ""),
                        timeout=60,
                        interval=0.02,
                        message=f"probe {probe.task_id}",
                    )
                    took = time.monotonic() - since
            except AssertionError:
                took = None
            with self._lock:
                self.recoveries.setdefault(kind, []).append(took)

        thread = threading.Thread(target=measure, name=f"chaos-recovery-{kind}", daemon=True)
        thread.start()
        self.recovery_threads.append(thread)

    def _ended(self, task_id: str) -> bool:
        for node in self.apis:
            try:
                answer = httpx.get(
                    f"{node.base_url}/v1/tasks/{task_id}",
                    headers={"Authorization": f"Bearer {self.api_key}"},
                    timeout=2,
                )
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                return answer.json()["status"] in checks.TERMINAL
        return False

    def revive_crashed(self) -> None:
        """A node that ended without being killed is a finding; start it again so
        that the run goes on."""
        for node in self.nodes:
            if node.check_exit() is not None:
                code, _ = node.unexpected_exits[-1]
                self.report.problems.append(f"{node.name} exited on its own (code {code})")
                node.start()


def run(plan: ChaosPlan, run_dir: Path, *, database_server: str | None = None) -> ChaosReport:
    """Set up, run the schedule, let the work settle, check; every process started
    is stopped and the database dropped, the run's own cluster deleted
    (``keep_database`` keeps either), on failure too. ``database_server`` is the
    server of the ``simulated`` and ``shared`` outages (default: the test server)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if plan.seed is None:
        plan = dataclasses.replace(plan, seed=random.randrange(2**32))
    state = _Run(plan, run_dir)
    with contextlib.ExitStack() as stack:
        cluster: PrivateCluster | None = None
        if plan.outage == "private":
            began = time.monotonic()
            cluster = stack.enter_context(PrivateCluster.started(keep=plan.keep_database))
            state.cluster_setup = time.monotonic() - began
            database_server = cluster.url
        server = PostgresServer(database_server or server_url())
        stack.callback(server.close)
        database_url = server.create(migrated=False)
        if not plan.keep_database and cluster is None:
            stack.callback(_drop_quietly, server, database_url)
        outage: Outage
        if cluster is not None:
            outage = private_restart(cluster)
        elif plan.outage == "shared":
            outage = shared_restart(server.url.render_as_string(hide_password=False))
        else:
            outage = RefusedConnections(
                server.url.render_as_string(hide_password=False),
                str(make_url(database_url).database),
            )
        stack.callback(outage.close)
        receiver = stack.enter_context(contextlib.closing(Receiver()))
        if cluster is not None and plan.keep_database:
            state.report.figures["kept_cluster"] = str(cluster.root)
        try:
            _execute(state, database_url, outage, receiver)
        finally:
            if state.client is not None:
                state.client.close()
            for node in state.nodes:
                node.stop()
    return state.report


def _drop_quietly(server: PostgresServer, database_url: str) -> None:
    with contextlib.suppress(Exception):
        server.drop(database_url)


def _execute(state: _Run, database_url: str, outage: Outage, receiver: Receiver) -> None:
    plan, report = state.plan, state.report
    began = time.monotonic()
    env = node_env(state.run_dir / "data", database_url, secrets.token_hex(32))
    # What an operator does with `taskgate migrate`, `accounts create` and `keys
    # create`, done in this process: three fewer interpreters to start.
    db = Database(database_url, pool_size=1)
    try:
        migrate.upgrade(db)
        state.apis = [api_node(i, env, state.run_dir) for i in range(plan.api_nodes)]
        state.workers = [
            worker_node(i, plan.slots, env, state.run_dir) for i in range(plan.worker_nodes)
        ]
        for node in state.nodes:
            node.start()
        accounts = AccountService(db)
        account = accounts.create_account(
            "chaos", credits=str(plan.tasks + 100), concurrency=plan.worker_nodes * plan.slots
        )
        account_id = account.id
        state.api_key = accounts.create_key(account_id)[1]
    finally:
        db.close()
    wait_until(
        lambda: all(node.ready() for node in state.nodes),
        timeout=120,
        interval=0.05,
        message="every node to start",
    )
    created = httpx.post(
        f"{state.apis[0].base_url}/v1/webhooks",
        json={"url": receiver.url(), "description": "chaos"},
        headers={"Authorization": f"Bearer {state.api_key}"},
        timeout=30,
    )
    created.raise_for_status()
    webhook_secret = str(created.json()["secret"])
    client = state.client = Client(
        lambda: [node.base_url for node in state.apis],
        state.api_key,
        threads=plan.client_threads,
        give_up_after=plan.give_up_after,
        seed=state.rng.randrange(2**32),
    )
    setup = time.monotonic() - began

    # The chaos: the paced submissions on a thread of their own, the faults here.
    faults = schedule(plan)
    duration = max(max((at for at, _ in faults), default=0.0), plan.kill_interval)
    paced = max(0, plan.tasks - plan.burst * plan.api_kills)
    start = time.monotonic()
    stop_pacing = threading.Event()
    pacer = threading.Thread(
        target=_pace, args=(client, paced, duration, start, stop_pacing), daemon=True
    )
    pacer.start()
    try:
        for at, kind in faults:
            stop_pacing.wait(max(0.0, start + at - time.monotonic()))
            state.revive_crashed()
            if kind == "worker":
                state.kill_worker()
            elif kind == "api":
                state.kill_api()
            else:
                state.outage(outage)
        pacer.join()
    finally:
        stop_pacing.set()
    chaos_time = time.monotonic() - start

    # Settling: the client's requests answered, then the work done.
    with contextlib.suppress(AssertionError):
        wait_until(
            lambda: client.pending() == 0,
            timeout=plan.give_up_after * 2 + 30,
            interval=0.05,
            message="the client's requests",
        )
    for thread in state.recovery_threads:
        thread.join(timeout=plan.settle_timeout)
    state.revive_crashed()
    db = Database(database_url, pool_size=1)
    try:
        snapshot = checks.Snapshot.read(db, account_id)
        try:

            def done() -> bool:
                nonlocal snapshot
                state.revive_crashed()
                snapshot = checks.Snapshot.read(db, account_id)
                delivered = {r.webhook_id for r in receiver.accepted()}
                return checks.settled(snapshot, client.record, delivered)

            wait_until(done, timeout=plan.settle_timeout, interval=0.2, message="settling")
        except AssertionError:
            report.problems.append(f"the work did not settle within {plan.settle_timeout:g}s")
        settled_at = time.monotonic()
        verdict = checks.Verdict()
        checks.check_tasks(snapshot, client.record, verdict)
        checks.check_credits(snapshot, client.record, verdict)
        checks.check_webhooks(snapshot, receiver, webhook_secret, client.record, verdict)
    finally:
        db.close()
    doctor = run_cli_status(env, "doctor")
    if doctor[0] != 0:
        verdict.problem(f"taskgate doctor exited {doctor[0]}: {doctor[1].strip()[-1500:]}")
    for node in state.nodes:
        count, first = alarm_lines(node)
        if count:
            report.evidence[node.name] = [f"{count} traceback line(s); the first:", *first]
        if not node.alive() or node.unexpected_exits:
            if not node.alive():
                verdict.problem(f"{node.name} is not running at the end")
            report.evidence.setdefault(node.name, []).extend(
                ["the end of its log:", *node.log().splitlines()[-40:]]
            )
    _client_problems(client, verdict)
    report.problems.extend(verdict.problems)
    _figures(state, verdict, setup, chaos_time, settled_at - start, outage)


def _pace(client: Client, count: int, duration: float, start: float, stop: threading.Event) -> None:
    """Submit ``count`` tasks evenly over ``duration`` seconds from ``start``."""
    interval = duration / max(count, 1)
    for n in range(count):
        if stop.wait(max(0.0, start + n * interval - time.monotonic())):
            return
        client.plan(1)


def _client_problems(client: Client, verdict: checks.Verdict) -> None:
    counts = client.counts
    errors = {s: n for s, n in counts.status.items() if s >= 500 and s != 503}
    if errors:
        verdict.problem(
            f"the API answered {errors} (only 503 is expected while the database is away)",
            [f"{status} {body}" for status, body in counts.evidence if status >= 500],
        )
    refused = [f"{status} {body}" for status, body in counts.evidence if 400 <= status < 500]
    if refused:
        verdict.problem("the API refused submissions", refused)
    if counts.timeouts:
        verdict.problem(f"{counts.timeouts} request(s) got no answer within the client timeout")
    given_up = [f"{s.key}: {s.gave_up}" for s in client.record if s.gave_up]
    if given_up:
        verdict.problem(f"{len(given_up)} request(s) given up", given_up)


def run_cli_status(env: dict[str, str], *args: str) -> tuple[int, str]:
    try:
        return 0, run_cli(env, *args)
    except RuntimeError as exc:
        return 1, str(exc)


def _figures(
    state: _Run,
    verdict: checks.Verdict,
    setup: float,
    chaos_time: float,
    to_settled: float,
    outage: Outage,
) -> None:
    plan, client = state.plan, state.client
    assert client is not None
    counts = client.counts
    acked = verdict.figures.get("tasks_acknowledged", 0)
    recoveries = {
        kind: (max(t for t in taken if t is not None) if any(taken) else None)
        for kind, taken in sorted(state.recoveries.items())
    }
    for kind, taken in sorted(state.recoveries.items()):
        if any(t is None for t in taken):
            state.report.problems.append(f"a probe after a {kind} fault did not complete")
    state.report.figures = {
        **state.report.figures,
        "nodes": f"{plan.api_nodes} API, {plan.worker_nodes} workers × {plan.slots} slots",
        "postgresql_outage": outage.description,
        **verdict.figures,
        "kills": dict(state.kills),
        "outage_seconds": state.outage_time,
        **({"cluster_setup_seconds": state.cluster_setup} if state.cluster_setup else {}),
        "setup_seconds": setup,
        "chaos_seconds": chaos_time,
        "to_settled_seconds": to_settled,
        "throughput_tasks_per_s": acked / to_settled if to_settled else 0.0,
        "client_requests": counts.requests,
        "client_retries": counts.retries,
        "client_503": counts.status.get(503, 0),
        "client_5xx_other": sum(n for s, n in counts.status.items() if s >= 500 and s != 503),
        "client_connection_errors": counts.connection_errors,
        "client_timeouts": counts.timeouts,
        "idempotent_replays": counts.replays,
        "max_recovery_seconds": recoveries,
        "plan": {k: v for k, v in asdict(plan).items() if k in ("tasks", "worker_kills", "seed")},
    }
