"""A throw-away PostgreSQL cluster of one's own: ``initdb`` in a temporary directory,
a server on a free port of 127.0.0.1 that can be stopped and started again (a real
restart: the server process goes away, every connection drops, none can be made
until it is back), and everything deleted at the end, on failure too.

    with PrivateCluster.started() as cluster:
        engine = create_engine(cluster.url)
        cluster.stop()
        cluster.start()

PostgreSQL refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` OS user (``runuser``), which owns the cluster's directory. The
binaries are those on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``;
:func:`unavailable` says why a cluster cannot be made here.

The server is tuned for throw-away data (``fsync``, ``full_page_writes`` and
``synchronous_commit`` off): it survives a stop and start, not a machine crash.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import free_port, wait_until

#: The OS user the server runs as when the tests run as root.
SERVER_USER = "postgres"
#: The settings of a cluster whose data is thrown away.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "logging_collector": "off",
}
#: Seconds ``pg_ctl`` waits for a start or a stop to complete.
PG_CTL_TIMEOUT = 60
#: How many ports a first start tries (another process may take a free port first).
PORT_ATTEMPTS = 3


PROGRAMS = ("initdb", "pg_ctl")


def binaries() -> dict[str, Path] | None:
    """``initdb`` and ``pg_ctl``: from ``PATH`` when both are there, else from the
    newest ``/usr/lib/postgresql/*/bin`` that has both; None if neither."""
    on_path = {name: shutil.which(name) for name in PROGRAMS}
    if all(on_path.values()):
        return {name: Path(str(found)) for name, found in on_path.items()}
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((candidate / name).exists() for name in PROGRAMS):
            number = tuple(int(n) for n in re.findall(r"\d+", candidate.parent.name))
            versions.append((number, candidate))
    if not versions:
        return None
    newest = max(versions)[1]
    return {name: newest / name for name in PROGRAMS}


def _as_root() -> bool:
    return os.geteuid() == 0


def unavailable() -> str | None:
    """Why a private cluster cannot be made here, or None when it can."""
    if binaries() is None:
        return (
            "initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin "
            "(install the PostgreSQL server package)"
        )
    if _as_root():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root, and there is no {SERVER_USER!r} OS user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root, and runuser is missing (to run PostgreSQL as postgres)"
    return None


class ClusterError(RuntimeError):
    """``initdb`` or ``pg_ctl`` failed; the message has its output and the server log's
    end."""


class PrivateCluster:
    """One PostgreSQL cluster in a directory of its own. :meth:`started` makes,
    starts and finally deletes one; :meth:`stop` and :meth:`start` restart it on the
    same port."""

    def __init__(self, root: Path, programs: dict[str, Path]) -> None:
        self.root = root
        self.programs = programs
        self.data_dir = root / "data"
        self.log_path = root / "postgresql.log"
        self.port = 0

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database, as the superuser (trust auth)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    @contextlib.contextmanager
    def started(cls, *, keep: bool = False) -> Iterator[PrivateCluster]:
        """A new cluster, running; stopped and deleted afterwards (``keep``: stopped
        and left in place, its directory in :attr:`root`)."""
        programs = binaries()
        reason = unavailable()
        if programs is None or reason is not None:
            raise ClusterError(f"cannot make a PostgreSQL cluster: {reason}")
        cluster = cls(Path(tempfile.mkdtemp(prefix="taskgate-pg-")), programs)
        try:
            cluster._init()
            cluster._first_start()
            yield cluster
        finally:
            cluster.close(keep=keep)

    def _init(self) -> None:
        if _as_root():
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {**SETTINGS, "unix_socket_directories": str(self.root)}
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# A throw-away cluster of the taskgate tests.\n")
            for name, value in settings.items():
                quoted = value.replace("'", "''")
                conf.write(f"{name} = '{quoted}'\n")

    def _first_start(self) -> None:
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                self.start()
                return
            except ClusterError:
                # Another process bound the port first: try another one.
                if attempt == PORT_ATTEMPTS - 1 or "could not bind" not in self._log_tail():
                    raise

    def start(self) -> None:
        """Start the server on its port; returns once it accepts connections."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            f"-p {self.port}",
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session and shuts down cleanly;
        returns once the server process has exited."""
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(PG_CTL_TIMEOUT), "stop"
        )

    def close(self, *, keep: bool = False) -> None:
        """Stop the server if it runs (its postmaster killed if ``pg_ctl`` cannot), and
        delete the cluster unless ``keep``."""
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self.stop("fast" if keep else "immediate")
            except ClusterError:
                self._kill_postmaster()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """SIGKILL the postmaster this cluster started (its pid from ``postmaster.pid``)
        and wait a while for it to go; its backends exit when they see it gone."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _gone(pid), timeout=10, interval=0.05, message="the postmaster")

    def _run(self, program: str, *args: str) -> str:
        argv = [str(self.programs[program]), *args]
        if _as_root():
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        # PG* variables (PGDATA, PGPORT, ...) would override the arguments.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(
            argv,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PG_CTL_TIMEOUT + 30,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(
                f"{program} {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\nserver log:\n{self._log_tail()}"
            )
        return done.stdout

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(none)"
        return "\n".join(text.splitlines()[-lines:])


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
