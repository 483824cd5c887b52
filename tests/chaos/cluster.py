"""The processes and the database of a chaos run: API nodes (``taskgate serve
--no-workers``) and worker nodes (``taskgate worker``), each restartable after a
``kill -9``, and the PostgreSQL outage (:class:`Outage`): by default a real restart
of the run's own cluster (:func:`private_restart`, ``tests/pgcluster.py``); on a
server shared with other work, the run's database refusing connections
(:class:`RefusedConnections`) or, where nobody else uses it, a restart of the
shared cluster (:func:`shared_restart`).

Every process is started here and ended here by its own id: a node's SIGKILL takes
its worker's executor processes with it (they ask the kernel to die with their
parent), and ``stop`` ends whatever is left with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from taskgate.store.postgres import normalise_url
from tests.helpers import free_port, test_env, wait_until
from tests.pgcluster import PrivateCluster

NodeKind = Literal["api", "worker"]

#: Log lines that say a process failed in a way an operator must look at.
ALARMS = ("Traceback", "CRITICAL")


@dataclass
class Node:
    """One taskgate process that the chaos kills and starts again; every start
    appends to the same log file, after a marker line."""

    name: str
    kind: NodeKind
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    #: Exits nobody asked for: (exit code, time).
    unexpected_exits: list[tuple[int, float]] = field(default_factory=list)
    _log_offset: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== chaos: start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskgate", *self.argv],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Not in the driver's process group: a Ctrl-C of the bench reaches
                # the driver, which stops the nodes itself.
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_exit(self) -> int | None:
        """Record and return the exit code if the process ended on its own."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            self.unexpected_exits.append((code, time.time()))
            self.process = None
            return code
        return None

    def kill9(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it, and reap it."""
        assert self.process is not None
        self.kills += 1
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def ready(self) -> bool:
        """The latest start serves: an API answers ``/healthz``, a worker has
        logged that its slots started."""
        if not self.alive():
            return False
        if self.kind == "api":
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        return b" started: " in self.log_since_start()

    def log_since_start(self) -> bytes:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None


def api_node(index: int, env: dict[str, str], run_dir: Path) -> Node:
    port = free_port()
    argv = ["serve", "--no-workers", "--no-access-log", "--port", str(port)]
    return Node(f"api-{index}", "api", argv, env, run_dir / f"api-{index}.log", port=port)


def worker_node(index: int, slots: int, env: dict[str, str], run_dir: Path) -> Node:
    argv = ["worker", "--workers", str(slots)]
    return Node(f"worker-{index}", "worker", argv, env, run_dir / f"worker-{index}.log")


def node_env(data_dir: Path, database_url: str, secret_key: str) -> dict[str, str]:
    """Every node's environment: one database, one secret key, one data dir (the
    shared blob storage), short timings, quick webhook retries."""
    return test_env(
        data_dir,
        TASKGATE_DATABASE_URL=database_url,
        TASKGATE_SECRET_KEY=secret_key,
        TASKGATE_DB_POOL_SIZE="3",
        TASKGATE_ALLOW_PRIVATE_URLS="true",
        TASKGATE_WEBHOOK_RETRY_SCHEDULE="0.2,0.5,1,1,2,2,2,2,2,2,2,2",
        TASKGATE_WEBHOOK_TIMEOUT_SECONDS="2",
        TASKGATE_LOG_LEVEL="info",
    )


def run_cli(env: dict[str, str], *args: str) -> str:
    """``taskgate ARGS`` to completion; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "taskgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"taskgate {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def alarm_lines(node: Node, limit: int = 5) -> tuple[int, list[str]]:
    """How many alarming lines the node's log has, and the first few."""
    found = [line for line in node.log().splitlines() if any(a in line for a in ALARMS)]
    return len(found), found[:limit]


#: How a run takes PostgreSQL away: ``private``, a real restart of a cluster made
#: for the run; ``simulated``, the run's own database refusing connections on a
#: shared server; ``shared``, a real restart of the shared server's cluster.
OutageKind = Literal["private", "simulated", "shared"]


class Outage(Protocol):
    """Makes PostgreSQL unavailable to the nodes from :meth:`begin` until
    :meth:`end`, which returns once the database serves again; :meth:`close`
    releases what it holds (connections), the database staying up."""

    #: What the report calls it.
    description: str

    def begin(self) -> None: ...

    def end(self) -> None: ...

    def close(self) -> None: ...


class Restart(Outage):
    """A real restart: the server is stopped (``fast``: every session ended, the
    server process gone, connections refused) and started again on the same port."""

    def __init__(
        self,
        description: str,
        server_url: str,
        stop: Callable[[], None],
        start: Callable[[], None],
    ) -> None:
        self.description = description
        self.server_url = server_url
        self._stop = stop
        self._start = start

    def begin(self) -> None:
        self._stop()

    def end(self) -> None:
        self._start()
        wait_for_server(self.server_url, 60)

    def close(self) -> None:
        """Nothing to release: the server is up after :meth:`end`."""


def private_restart(cluster: PrivateCluster) -> Restart:
    """Restarts the run's own cluster (``tests/pgcluster.py``)."""
    return Restart(
        "real restart of a private PostgreSQL cluster", cluster.url, cluster.stop, cluster.start
    )


def shared_restart(server_url: str) -> Restart:
    """Restarts the whole cluster of a shared server with ``pg_ctlcluster`` (Debian's
    newest ``main``): only on a server nobody else is using."""
    return Restart(
        "real restart of the shared PostgreSQL cluster (pg_ctlcluster)",
        server_url,
        lambda: _pg_ctlcluster("stop", "-m", "fast"),
        lambda: _pg_ctlcluster("start"),
    )


class RefusedConnections(Outage):
    """A restart as the nodes see it, confined to the run's database on a server that
    other work shares: the database refuses new connections (``ALTER DATABASE …
    ALLOW_CONNECTIONS false``) and its sessions are ended (``pg_terminate_backend``),
    so every connection drops and none can be made until :meth:`end`, while the other
    databases carry on."""

    description = "simulated: the run's database refuses connections"

    def __init__(self, server_url: str, database: str) -> None:
        self.database = database
        self._admin: Engine = create_engine(
            make_url(normalise_url(server_url)),
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"connect_timeout": 5},
        )

    def begin(self) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
        self.terminate_sessions()
        # A session that was opening as connections were refused may have slipped in.
        threading.Event().wait(0.2)
        self.terminate_sessions()

    def terminate_sessions(self) -> int:
        """End every session of the database; how many were ended."""
        with self._admin.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.database},
            ).scalar_one()
        return int(ended)

    def end(self) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')

    def close(self) -> None:
        self._admin.dispose()


def _pg_ctlcluster(action: str, *options: str) -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if p.is_dir())
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action, *options],
        check=True,
        timeout=120,
        capture_output=True,
    )


def wait_for_server(server_url: str, timeout: float) -> None:
    """Until the PostgreSQL server accepts connections (again, after a restart)."""
    admin = create_engine(
        make_url(normalise_url(server_url)), poolclass=NullPool, connect_args={"connect_timeout": 2}
    )

    def answers() -> bool:
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError:
            return False
        return True

    try:
        wait_until(
            answers, timeout=timeout, interval=0.1, message="PostgreSQL to accept connections"
        )
    finally:
        admin.dispose()
