"""PostgreSQL specifics: the URL, the driver (psycopg 3), and how connections are set up."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

#: A transaction left open this long by a stalled process is ended by the server: an
#: open transaction holds back the outbox's visibility horizon (see ``events``)
#: and vacuum.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
#: How long to wait for a new connection before the database counts as unavailable.
CONNECT_TIMEOUT_S = 5
#: How long a thread waits for a free connection of its process's pool.
POOL_TIMEOUT_S = 10
#: A connection whose server stops answering (a host gone, a network cut) is
#: given up after this long rather than waited on forever: TCP keepalives probe an
#: idle one, and unacknowledged data ends a busy one (``tcp_user_timeout``).
DEAD_PEER_TIMEOUT_MS = 15_000


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def is_postgresql(url: str) -> bool:
    return url.partition("://")[0].split("+")[0] in ("postgresql", "postgres")


def normalise_url(url: str) -> str:
    """``postgresql://…`` (or ``postgres://…``) as SQLAlchemy names psycopg 3:
    ``postgresql+psycopg://…``. A URL naming another driver is refused."""
    scheme, sep, rest = url.partition("://")
    base, _, driver = scheme.partition("+")
    if base not in ("postgresql", "postgres") or not sep:
        raise ValueError(f"not a PostgreSQL URL: {make_url(url).render_as_string()}")
    if driver not in ("", "psycopg"):
        raise ValueError(f"taskgate talks to PostgreSQL through psycopg 3, not {driver!r}")
    return f"postgresql+psycopg://{rest}"


def engine(url: str, *, pool_size: int) -> Engine:
    """An engine of at most ``pool_size`` connections (no overflow: the pool is the
    budget a process takes of the server's connections).

    Every wait is bounded, so that a database that is down or unreachable makes a
    caller fail fast (as unavailable) rather than hang: connecting, waiting for a
    pooled connection, and a peer that stopped answering. A pooled connection is
    pinged before use, so the first call after a database restart gets a new one
    instead of failing on a connection the restart closed.
    """
    options = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    connect_args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "options": options,
        "application_name": "taskgate",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 5,
        "tcp_user_timeout": DEAD_PEER_TIMEOUT_MS,
    }
    return create_engine(
        normalise_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args=connect_args,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
