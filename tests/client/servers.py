"""A server on a port of the test's choosing, so that it can be stopped and started
again where a client is still looking for it (``tests.helpers.start_server`` picks a
new free port on every start)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import ServerProcess, serve_on_port


def start_on_port(
    data_dir: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    """Start ``taskgate serve`` on ``port`` and wait until it answers /healthz."""
    return serve_on_port(data_dir, port, *args, env=env)
