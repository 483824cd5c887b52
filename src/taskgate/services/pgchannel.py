"""The PostgreSQL channel: wake-ups between the processes of a deployment on many
machines, through LISTEN/NOTIFY.

It has the local channel's interface and meaning: a role (``worker``, ``api``) is
a PostgreSQL channel (``taskgate_worker``, ``taskgate_api``), a message is a
notification whose payload holds ids and a kind marker only (never a task's
body), and delivery is a hint — every listener also polls the database, so a lost
notification costs latency, never work.

Each process keeps one connection for it (see :mod:`taskgate.store.notify`),
outside its pool: count one connection per API and worker process on top of
``db_pool_size``. A thread owns the connection. It waits on the socket and on a
wake-up pipe, so that:

- ``publish`` returns at once, from any thread: it queues the message and the
  thread sends everything queued in one statement — a burst of writes costs one
  NOTIFY transaction, and identical messages (``t``, ``e``) collapse into one;
- notifications are handed to each listener's event loop
  (``call_soon_threadsafe``), several identical ones as one;
- ``close`` is synchronous, as the composition root's is.

A message is sent after the transaction that wrote the change has committed (the
services publish once their write returned), never inside it: the store's write
transactions stay the same on both databases, and they do not take the
server-wide lock that a NOTIFY holds while its transaction commits, which would
serialise every committing writer. A process that dies between its commit and its
notification leaves the others to find the change at their next poll.

When the connection is lost (the database restarts, a backend is terminated) the
thread reconnects with a backoff (doubling up to ``max_backoff`` seconds, with
jitter). Notifications sent meanwhile are gone, so after every connection, once
it listens again, each listener is told to look at everything (``t`` for
workers, ``e`` for API processes); messages published while disconnected are
sent after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import selectors
import threading
from collections.abc import Callable

from taskgate.core.errors import Unavailable
from taskgate.services.channel import API, WORKER
from taskgate.store.notify import MAX_PAYLOAD_BYTES, NotifyConnection

log = logging.getLogger(__name__)

#: The PostgreSQL channel of each role.
CHANNELS = {WORKER: "taskgate_worker", API: "taskgate_api"}
_ROLES = {channel: role for role, channel in CHANNELS.items()}
#: What a listener of each role is told after a (re)connection: look at everything.
WAKE_ALL = {WORKER: b"t", API: b"e"}
#: Messages kept while disconnected (beyond that, polling finds the changes).
MAX_PENDING = 10_000
_MIN_BACKOFF = 0.05


class PgSubscription:
    """A listener's registration; ``close`` ends it."""

    def __init__(
        self,
        channel: PgChannel,
        role: str,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
    ) -> None:
        self.role = role
        self._channel = channel
        self._loop = loop
        self._on_message = on_message

    def deliver(self, message: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the listener's loop is closed
            self._loop.call_soon_threadsafe(self._on_message, message)

    def close(self) -> None:
        self._channel.unsubscribe(self)


class PgChannel:
    """Sends and receives wake-ups through one LISTEN/NOTIFY connection."""

    def __init__(self, url: str, *, max_backoff: float = 5.0) -> None:
        self._url = url
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        # An ordered set of (channel, payload) to send.
        self._pending: dict[tuple[str, str], None] = {}
        self._subscriptions: dict[str, list[PgSubscription]] = {}
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._rng = random.Random()

    # -- the interface -----------------------------------------------------------

    def publish(self, role: str, message: bytes) -> None:
        if len(message) > MAX_PAYLOAD_BYTES:
            log.warning(
                "wake-up of %d bytes not sent (at most %d)", len(message), MAX_PAYLOAD_BYTES
            )
            return
        key = (CHANNELS[role], message.decode())
        with self._lock:
            if self._closing.is_set() or len(self._pending) >= MAX_PENDING:
                return
            self._pending[key] = None
        self._start()
        self._poke()

    def listen(self, role: str, name: str, on_message: Callable[[bytes], None]) -> PgSubscription:
        """Call ``on_message`` (on the running event loop) with each message for
        ``role``. ``name`` identifies the listener in logs."""
        subscription = PgSubscription(self, role, asyncio.get_running_loop(), on_message)
        with self._lock:
            self._subscriptions.setdefault(role, []).append(subscription)
        log.debug("listening for %s wake-ups as %s", role, name)
        self._start()
        self._poke()
        return subscription

    def unsubscribe(self, subscription: PgSubscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscriptions.get(subscription.role, []).remove(subscription)

    def close(self) -> None:
        """Stop the thread and close the connection (unsent messages are dropped)."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            self._write_poke()
        if self._thread is not None:
            # The thread may be stuck connecting (up to the connect timeout): it is
            # a daemon, and notices the close when it gets back.
            self._thread.join(timeout=2)
            if self._thread.is_alive():
                return
        with self._lock:
            os.close(self._wake_read)
            os.close(self._wake_write)

    # -- the thread --------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closing.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="taskgate-wakeups", daemon=True)
        self._thread.start()

    def _poke(self) -> None:
        with self._lock:
            if not self._closing.is_set():
                self._write_poke()

    def _write_poke(self) -> None:
        # A full pipe already holds a wake-up.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")

    def _run(self) -> None:
        delay = _MIN_BACKOFF
        failing = False
        while not self._closing.is_set():
            try:
                conn = NotifyConnection.open(self._url)
            except Unavailable as exc:
                if not failing:
                    log.warning("wake-up channel: cannot connect (retrying): %s", exc)
                failing = True
                self._closing.wait(delay * (1 + self._rng.random() / 2))
                delay = min(delay * 2, self._max_backoff)
                continue
            if self._closing.is_set():
                conn.close()
                return
            if failing:
                log.info("wake-up channel: connected again")
            failing = False
            delay = _MIN_BACKOFF
            try:
                self._session(conn)
            except Unavailable as exc:
                log.warning("wake-up channel: connection lost (reconnecting): %s", exc)
                self._closing.wait(delay)
            except Exception:
                log.exception("wake-up channel failed; reconnecting")
                self._closing.wait(self._max_backoff)
            finally:
                conn.close()

    def _session(self, conn: NotifyConnection) -> None:
        """Listen, send and hand out until closed; raises Unavailable when the
        connection is lost."""
        listening: set[str] = set()
        connected = False
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._closing.is_set():
                with self._lock:
                    roles = [role for role, subs in self._subscriptions.items() if subs]
                wanted = {CHANNELS[role] for role in roles} - listening
                if wanted:
                    conn.listen(sorted(wanted))
                    listening |= wanted
                if not connected:
                    # Listening now: whatever was announced while this process was
                    # not is found by looking at everything once.
                    connected = True
                    self._dispatch([(CHANNELS[role], WAKE_ALL[role].decode()) for role in roles])
                with self._lock:
                    pending = list(self._pending)
                    self._pending.clear()
                try:
                    conn.send(pending)
                except Unavailable:
                    # Sent after reconnecting.
                    with self._lock:
                        for key in pending:
                            self._pending.setdefault(key, None)
                    raise
                self._dispatch(conn.received())
                for ready, _ in selector.select():
                    if ready.fd == self._wake_read:
                        self._drain_pokes()

    def _drain_pokes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass

    def _dispatch(self, received: list[tuple[str, str]]) -> None:
        if not received:
            return
        with self._lock:
            subscriptions = {role: list(subs) for role, subs in self._subscriptions.items()}
        for channel, payload in dict.fromkeys(received):
            role = _ROLES.get(channel)
            if role is None:
                continue
            message = payload.encode()
            for subscription in subscriptions.get(role, ()):
                subscription.deliver(message)
