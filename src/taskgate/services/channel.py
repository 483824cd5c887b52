"""The local channel: wake-ups between the processes of one embedded deployment.

Each listening process binds a Unix datagram socket in a directory derived from
the data dir, one subdirectory per role (``worker``, ``api``). A sender writes one
datagram to every socket of a role. Delivery is a hint, not a promise: a full
buffer or a dead peer drops the message, and every listener also polls the
database, so nothing depends on it but latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

WORKER = "worker"
API = "api"


def channel_dir(data_dir: Path) -> Path:
    """A short directory for the sockets (Unix socket paths are limited to 107 bytes)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"taskgate-{os.getuid()}-{digest}"


class LocalChannel:
    """Sends datagrams to the listeners of a role."""

    def __init__(self, data_dir: Path) -> None:
        self.root = channel_dir(data_dir)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._peers: dict[str, tuple[float, list[str]]] = {}

    def _listeners(self, role: str) -> list[str]:
        directory = self.root / role
        try:
            mtime = directory.stat().st_mtime
        except FileNotFoundError:
            return []
        cached = self._peers.get(role)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        paths = [str(p) for p in directory.glob("*.sock")]
        self._peers[role] = (mtime, paths)
        return paths

    def publish(self, role: str, message: bytes) -> None:
        for path in self._listeners(role):
            try:
                self._sock.sendto(message, path)
            except (ConnectionRefusedError, FileNotFoundError):
                # A listener that died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(path)
                self._peers.pop(role, None)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                    log.warning("local channel: cannot reach %s: %s", path, exc)

    def close(self) -> None:
        self._sock.close()


class Listener:
    """Receives a role's datagrams on the running event loop."""

    def __init__(self, data_dir: Path, role: str, name: str) -> None:
        directory = channel_dir(data_dir) / role
        self.path = directory / f"{name}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for attempt in range(5):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            try:
                self._sock.bind(str(self.path))
                break
            except FileNotFoundError:
                # Another listener's close removed the empty directory meanwhile.
                if attempt == 4:
                    raise
        self._sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, on_message: Callable[[bytes], None]) -> None:
        self._loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = self._sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                on_message(data)

        self._loop.add_reader(self._sock.fileno(), readable)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # Leave no empty directories behind (another listener may still use them).
        for directory in (self.path.parent, self.path.parent.parent):
            with contextlib.suppress(OSError):
                directory.rmdir()
