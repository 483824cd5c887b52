"""Processes the benchmark starts: environment, start, readiness, and a sure stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from pgserver import BENCH_SECRET_KEY

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def taskgate_env(
    data_dir: Path, *, database_url: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a taskgate process under benchmark.

    No ``TASKGATE_…`` variable of the caller leaks in; rate limits are off, logging
    is quiet and the bench workflows are importable. With ``database_url`` (a
    PostgreSQL database) the process uses it, with the bench's shared secret key.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "TASKGATE_DATA_DIR": str(data_dir),
            "TASKGATE_LOG_LEVEL": "warning",
            "TASKGATE_RATE_LIMIT_READS": "unlimited",
            "TASKGATE_RATE_LIMIT_WRITES": "unlimited",
            "TASKGATE_WORKFLOWS": "bench_workflows",
            "PYTHONPATH": os.pathsep.join(
                [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    if database_url is not None:
        env["TASKGATE_DATABASE_URL"] = database_url
        env["TASKGATE_SECRET_KEY"] = BENCH_SECRET_KEY
    env.update(extra)
    return env


def taskgate_cli(data_dir: Path, *args: str, database_url: str | None = None) -> str:
    """Run ``taskgate ARGS`` to completion and return its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "taskgate", *args],
        env=taskgate_env(data_dir, database_url=database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"taskgate {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` or if ``alive`` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process exited (code {alive.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running(
    args: list[str], *, log_path: Path, env: dict[str, str] | None = None, stop_timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the body of a ``with``; SIGTERM it (then SIGKILL) on the way out.

    Its output goes to ``log_path``. The process leads its own process group, so
    that a kill also reaches any children it left behind.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process, stop_timeout)


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Children that outlived their parent (its own process group only).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests so far (Linux /proc/stat; 0 elsewhere).

    On a shared virtual machine this, more than the load average, tells when a
    figure was taken on a machine that was not all ours."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[8]) / ticks if len(fields) > 8 else 0.0


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def work_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A throw-away directory for a bench's data dirs and logs, removed afterwards
    unless ``keep`` (then its path is printed)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if keep:
            print(f"data dirs and logs kept in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
