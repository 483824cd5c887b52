"""Helpers for tests: waiting on conditions, and real server and CLI processes.

A data dir's processes keep their records in its SQLite file unless the data dir
is bound to a PostgreSQL database (:func:`use_postgres`): then every process
started here for it (``serve``, ``worker``, CLI commands) gets that database's URL
and the deployment's shared secret key in its environment, and
:func:`database_url` names that database to the tests' own checks.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
SUPPORT = Path(__file__).parent / "support"


def wait_until(
    condition: Callable[[], T | bool | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    """A port nothing listens on now. Another process may take it before the caller
    binds it (the suite runs in parallel): :func:`start_server` retries on that."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Data dirs whose processes use a PostgreSQL database, by resolved path.
_POSTGRES: dict[Path, str] = {}


def use_postgres(data_dir: Path, url: str) -> None:
    """Bind ``data_dir`` to the PostgreSQL database at ``url`` (until :func:`forget`)."""
    _POSTGRES[data_dir.resolve()] = url


def forget(data_dir: Path) -> None:
    _POSTGRES.pop(data_dir.resolve(), None)


def postgres_url(data_dir: Path) -> str | None:
    """The PostgreSQL database ``data_dir`` is bound to, or None (its SQLite file)."""
    return _POSTGRES.get(data_dir.resolve())


def database_url(data_dir: Path) -> str:
    """The database of a data dir's processes: its PostgreSQL database or SQLite file."""
    return postgres_url(data_dir) or f"sqlite:///{(data_dir / 'taskgate.db').resolve()}"


def shared_secret(url: str) -> str:
    """The secret key every node on one PostgreSQL database gets (derived from its URL,
    so that each test's deployment has its own)."""
    return hashlib.sha256(f"taskgate-test:{url}".encode()).hexdigest()


def test_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a taskgate process under test: short timings, test workflows,
    and the data dir's PostgreSQL database if it is bound to one (``extra`` wins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env.update(
        {
            "TASKGATE_DATA_DIR": str(data_dir),
            "TASKGATE_WORKFLOWS": "taskgate_testflows",
            "TASKGATE_LEASE_SECONDS": "2",
            "TASKGATE_CANCEL_GRACE_SECONDS": "1",
            "TASKGATE_DRAIN_SECONDS": "3",
            "TASKGATE_POLL_INTERVAL_SECONDS": "0.2",
            "TASKGATE_RETRY_BACKOFF_SECONDS": "0.05",
            "TASKGATE_WORKERS": "2",
            # Most tests send far more requests than a production limit allows; the
            # rate-limit tests set their own limits.
            "TASKGATE_RATE_LIMIT_READS": "unlimited",
            "TASKGATE_RATE_LIMIT_WRITES": "unlimited",
            "PYTHONPATH": os.pathsep.join(
                [str(SUPPORT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    bound = postgres_url(data_dir)
    if bound is not None:
        env["TASKGATE_DATABASE_URL"] = bound
    env.update(extra)
    url = env.get("TASKGATE_DATABASE_URL", "")
    if url.startswith("postgresql") and "TASKGATE_SECRET_KEY" not in env:
        env["TASKGATE_SECRET_KEY"] = shared_secret(url)
    return env


def run_cli(
    data_dir: Path, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``taskgate ARGS`` against a data dir."""
    result = subprocess.run(
        [sys.executable, "-m", "taskgate", *args],
        env=test_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"taskgate {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    data_dir: Path
    api_key: str | None
    log_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        key = key if key is not None else self.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> ServerProcess:
    """Start ``taskgate serve`` on a free port and wait until it answers /healthz
    (see :func:`serve_on_port`); a port taken meanwhile by another process is
    replaced by a new one."""
    for attempt in range(5):
        try:
            return serve_on_port(data_dir, free_port(), *args, env=env, timeout=timeout)
        except PortTaken:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


class PortTaken(AssertionError):
    """``serve`` could not listen: another process has the port."""


def serve_on_port(
    data_dir: Path, port: int, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> ServerProcess:
    """Start ``taskgate serve`` on ``port`` and wait until it answers /healthz.

    ``api_key`` is the key of the ``default`` account: the one ``serve`` prints when
    it creates that account in a new SQLite data dir, or, on a new PostgreSQL
    database (where accounts come from the operator), one made here beforehand.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    process_env = test_env(data_dir, **(env or {}))
    made_key = _default_account(process_env)
    log_path = data_dir.parent / f"serve-{port}-{os.urandom(3).hex()}.log"
    command = [sys.executable, "-m", "taskgate", "serve", "--port", str(port), "--no-access-log"]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*command, *args],
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    lines: list[str] = []

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            if os.strerror(errno.EADDRINUSE).lower() in log.lower():
                raise PortTaken(f"port {port} is taken:\n{log}")
            raise AssertionError(f"serve exited early:\n{log}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=timeout, interval=0.05, message="the server to answer /healthz")
        wait_until(
            lambda: any("listening" in line for line in lines), timeout=5, message="the banner"
        )
    except BaseException:
        # A server that never came up is not left running (with its workers).
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    printed = next((line.strip() for line in lines if line.strip().startswith("tg_live_")), None)
    return ServerProcess(process, base_url, data_dir, made_key or printed, log_path, lines)


def _default_account(env: dict[str, str]) -> str | None:
    """On a PostgreSQL database without accounts, the ``default`` account that the
    tests expect (with ``TASKGATE_INITIAL_CREDITS``, as ``serve`` makes it on SQLite);
    its key. None on SQLite, or where accounts exist."""
    url = env.get("TASKGATE_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        return None
    from taskgate.services.accounts import AccountService
    from taskgate.store.db import Database

    db = Database(url, pool_size=1)
    try:
        return AccountService(db).ensure_default(env.get("TASKGATE_INITIAL_CREDITS", "1000"))
    finally:
        db.close()
