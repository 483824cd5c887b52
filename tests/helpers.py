"""Helpers for tests: waiting on conditions, and real server and CLI processes."""

from __future__ import annotations

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a taskgate process under test: short timings, test workflows."""
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
    env.update(extra)
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
    data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> ServerProcess:
    """Start ``taskgate serve`` on a free port and wait until it answers /healthz."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir.parent / f"serve-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "taskgate", "serve", "--port", str(port), "--no-access-log", *args],
        env=test_env(data_dir, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
    )
    log_file.close()
    lines: list[str] = []

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{log_path.read_text()}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=timeout, interval=0.05, message="the server to answer /healthz")
    wait_until(lambda: any("listening" in line for line in lines), timeout=5, message="the banner")
    key = next((line.strip() for line in lines if line.strip().startswith("tg_live_")), None)
    return ServerProcess(process, base_url, data_dir, key, log_path, lines)
