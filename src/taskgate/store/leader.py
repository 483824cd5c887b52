"""Leader leases: a named duty held by one process until its lease runs out.

A process campaigns by one compare-and-set statement, the same on SQLite and
PostgreSQL (``INSERT … ON CONFLICT DO UPDATE … WHERE``): it takes the row when
nobody holds it, renews it when it is the holder, and gets nothing back while
another holder's lease is running. A transaction that must only run under the
lease checks it with :func:`holds` first; on PostgreSQL that check locks the row
against a takeover until the transaction ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from taskgate.store.tables import leader_leases

_T = leader_leases


@dataclass(frozen=True, slots=True)
class Term:
    """A holder's time with a duty: the how-manieth holder it is, and since when."""

    holder: str
    term: int
    elected_at: int
    expires_at: int


def _campaign_statement(dialect: str, name: str, holder: str, now: int, ttl_us: int) -> object:
    module = postgresql if dialect == "postgresql" else sqlite
    insert = module.insert(_T).values(
        name=name, holder=holder, term=1, elected_at=now, expires_at=now + ttl_us
    )
    # The holder renews; anyone takes a lease that ran out (a new term begins).
    renewing = (_T.c.holder == insert.excluded.holder) & (_T.c.expires_at > now)
    return insert.on_conflict_do_update(
        index_elements=[_T.c.name],
        set_={
            "holder": insert.excluded.holder,
            "expires_at": insert.excluded.expires_at,
            "term": case((renewing, _T.c.term), else_=_T.c.term + 1),
            "elected_at": case((renewing, _T.c.elected_at), else_=insert.excluded.elected_at),
        },
        where=(_T.c.holder == insert.excluded.holder) | (_T.c.expires_at <= now),
    ).returning(_T.c.holder, _T.c.term, _T.c.elected_at, _T.c.expires_at)


def campaign(conn: Connection, name: str, holder: str, now: int, ttl_us: int) -> Term | None:
    """Take or renew the lease of ``name`` until ``now + ttl_us``: the term held, or
    None while another holder's lease runs."""
    stmt = _campaign_statement(conn.dialect.name, name, holder, now, ttl_us)
    row = conn.execute(stmt).first()  # type: ignore[call-overload]
    return Term(*row) if row is not None else None


def holds(conn: Connection, name: str, holder: str, now: int) -> bool:
    """Whether ``holder``'s lease of ``name`` is running. On PostgreSQL the row stays
    locked (``FOR SHARE``) until the transaction ends, so no takeover commits
    while the caller's work under the lease is under way."""
    found = conn.execute(
        select(_T.c.name)
        .where(_T.c.name == name, _T.c.holder == holder, _T.c.expires_at > now)
        .with_for_update(read=True)
    ).first()
    return found is not None


def resign(conn: Connection, name: str, holder: str, now: int) -> bool:
    """End ``holder``'s lease now, so that another process takes over at once."""
    result = conn.execute(
        update(_T)
        .where(_T.c.name == name, _T.c.holder == holder, _T.c.expires_at > now)
        .values(expires_at=now)
    )
    return bool(result.rowcount)


def current(conn: Connection, name: str) -> Term | None:
    """The last holder of ``name`` (whose lease may have run out)."""
    row = conn.execute(
        select(_T.c.holder, _T.c.term, _T.c.elected_at, _T.c.expires_at).where(_T.c.name == name)
    ).first()
    return Term(*row) if row is not None else None
