"""A server on a port of the test's choosing, so that it can be stopped and started
again where a client is still looking for it (``tests.helpers.start_server`` picks a
new free port on every start)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.helpers import ServerProcess, test_env, wait_until


def start_on_port(
    data_dir: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    """Start ``taskgate serve`` on ``port`` and wait until it answers /healthz."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"serve-{port}-{len(list(data_dir.parent.glob('serve-*')))}.log"
    command = [sys.executable, "-m", "taskgate", "serve", "--port", str(port), "--no-access-log"]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*command, *args],
            env=test_env(data_dir, **(env or {})),
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    lines: list[str] = []

    def drain() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=drain, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{log_path.read_text()}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30, interval=0.05, message="the server to answer /healthz")
    key = next((line.strip() for line in lines if line.strip().startswith("tg_live_")), None)
    return ServerProcess(process, base_url, data_dir, key, log_path, lines)
