"""LISTEN/NOTIFY on PostgreSQL: the one connection a process keeps for wake-ups.

A :class:`NotifyConnection` is a plain psycopg connection in autocommit mode, outside
the pool: a pooled connection would lose its ``LISTEN`` when returned, and a
connection pooler in transaction mode (PgBouncer) drops it too, so it goes to the
server directly. It both listens and sends: a send is one statement that notifies
every (channel, payload) pair at once, in its own transaction, after the change it
announces has committed.

Notifications are a hint. They are delivered only to connections listening at
the time, only after the sending transaction commits, and never queued for a
listener that reconnects later; the payload is at most 7999 bytes. Whoever
listens also polls the database.

The sending transaction is committed with ``synchronous_commit = off``: a NOTIFY
takes a transaction id, so its commit would otherwise wait for a WAL flush, and a
hint lost in a server crash costs nothing that polling does not recover.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NoReturn

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from taskgate.core.errors import Unavailable
from taskgate.store.postgres import CONNECT_TIMEOUT_S, normalise_url

#: The longest payload PostgreSQL accepts (in bytes, in the server's encoding).
MAX_PAYLOAD_BYTES = 7999

_SEND = (
    "SELECT pg_notify(m.channel, m.payload)"
    " FROM unnest(%s::text[], %s::text[]) AS m(channel, payload)"
)


def conninfo(url: str) -> str:
    """A libpq connection URI from a taskgate database URL (any driver suffix dropped)."""
    parsed = make_url(normalise_url(url)).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class NotifyConnection:
    """One autocommit connection that listens on channels and sends notifications.

    Methods raise :class:`~taskgate.core.errors.Unavailable` when the connection
    is lost; a lost connection is closed and cannot be used again.
    """

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self._conn = conn

    @classmethod
    def open(cls, url: str, *, application_name: str = "taskgate-wakeups") -> NotifyConnection:
        try:
            conn = psycopg.connect(
                conninfo(url),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=application_name,
                options="-c synchronous_commit=off",
                # A peer that vanishes without closing the socket (a host lost, a
                # network cut) is noticed within about a minute.
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise Unavailable(f"Cannot connect for notifications: {exc}") from exc
        return cls(conn)

    @property
    def backend_pid(self) -> int:
        return self._conn.info.backend_pid

    def fileno(self) -> int:
        """The socket: readable when notifications (or the server's goodbye) arrive."""
        return self._conn.fileno()

    def listen(self, channels: Iterable[str]) -> None:
        try:
            for channel in channels:
                self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            self._lost(exc)

    def send(self, messages: Collection[tuple[str, str]]) -> None:
        """Notify each ``(channel, payload)``, all in one transaction."""
        if not messages:
            return
        channels = [channel for channel, _ in messages]
        payloads = [payload for _, payload in messages]
        try:
            self._conn.execute(_SEND, (channels, payloads))
        except psycopg.Error as exc:
            self._lost(exc)

    def received(self) -> list[tuple[str, str]]:
        """The notifications that arrived, as ``(channel, payload)``; never waits."""
        try:
            return [(n.channel, n.payload) for n in self._conn.notifies(timeout=0)]
        except psycopg.Error as exc:
            self._lost(exc)

    def close(self) -> None:
        self._conn.close()

    def _lost(self, exc: psycopg.Error) -> NoReturn:
        self._conn.close()
        raise Unavailable(f"The notification connection was lost: {exc}") from exc
