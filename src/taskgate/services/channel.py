"""Wake-ups between processes: the channel interface, and the local channel of
one embedded deployment.

A channel carries short messages to every listening process of a role (``worker``,
``api``): ``t`` (tasks were submitted), ``e`` (events were written), ``c<task id>``
(a running task's cancellation was asked for). They are hints that let a process
look now rather than at its next poll of the database. :func:`open_channel` picks
the local channel on SQLite and LISTEN/NOTIFY on PostgreSQL
(:mod:`taskgate.services.pgchannel`).

The local channel: each listening process binds a Unix datagram socket in a
directory derived from the data dir, one subdirectory per role. A sender writes
one datagram to every socket of a role. Delivery is a hint, not a promise: a full
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
from typing import Protocol

from taskgate.settings import Settings

log = logging.getLogger(__name__)

WORKER = "worker"
API = "api"


class Subscription(Protocol):
    def close(self) -> None:
        """Stop listening."""


class Channel(Protocol):
    def publish(self, role: str, message: bytes) -> None:
        """Send ``message`` to every listener of ``role``; never blocks, never fails."""

    def listen(self, role: str, name: str, on_message: Callable[[bytes], None]) -> Subscription:
        """Call ``on_message`` on the running event loop with each message for
        ``role``; ``name`` is unique among the listeners of one host."""

    def close(self) -> None:
        """Release the channel (after its subscriptions are closed)."""


def open_channel(settings: Settings) -> Channel:
    """The local channel on SQLite; LISTEN/NOTIFY on PostgreSQL."""
    if settings.is_sqlite:
        return LocalChannel(settings.data_dir)
    # Imported here: an embedded deployment never loads the PostgreSQL driver.
    from taskgate.services.pgchannel import PgChannel

    return PgChannel(settings.resolved_database_url)


def channel_dir(data_dir: Path) -> Path:
    """A short directory for the sockets (Unix socket paths are limited to 107 bytes)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"taskgate-{os.getuid()}-{digest}"


class LocalChannel:
    """Sends datagrams to the listeners of a role."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
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

    def listen(self, role: str, name: str, on_message: Callable[[bytes], None]) -> Listener:
        listener = Listener(self._data_dir, role, name)
        listener.start(on_message)
        return listener

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
