"""Accounts and their API keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from taskgate.core.errors import Conflict
from taskgate.core.models import Account, ApiKey
from taskgate.store.prepared import Prepared
from taskgate.store.tables import accounts, api_keys

_ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.name,
    accounts.c.concurrency_limit,
    accounts.c.running,
    accounts.c.created_at,
    accounts.c.credits_available,
    accounts.c.credits_reserved,
    accounts.c.credits_charged,
    accounts.c.rate_limit_reads,
    accounts.c.rate_limit_writes,
    accounts.c.output_retention_seconds,
)
_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


def create(conn: Connection, account: Account) -> None:
    try:
        with conn.begin_nested():
            conn.execute(
                insert(accounts).values(
                    id=account.id,
                    name=account.name,
                    concurrency_limit=account.concurrency_limit,
                    running=0,
                    created_at=account.created_at,
                    rate_limit_reads=account.rate_limit_reads,
                    rate_limit_writes=account.rate_limit_writes,
                )
            )
    except IntegrityError as exc:
        raise Conflict(
            f"An account named {account.name!r} already exists.",
            code="account_exists",
            param="name",
        ) from exc


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(accounts)).scalar_one())


def find(conn: Connection, id_or_name: str) -> Account | None:
    row = conn.execute(
        select(*_ACCOUNT_COLUMNS).where(
            or_(accounts.c.id == id_or_name, accounts.c.name == id_or_name)
        )
    ).first()
    return Account(**row._mapping) if row is not None else None


_GET = Prepared(select(*_ACCOUNT_COLUMNS).where(accounts.c.id == bindparam("account_id")))


def get(conn: Connection, account_id: str) -> Account | None:
    row = _GET.first(conn, account_id=account_id)
    return Account(**row) if row is not None else None


def list_page(conn: Connection, *, limit: int, after_id: str | None = None) -> list[Account]:
    """Oldest first."""
    query = select(*_ACCOUNT_COLUMNS)
    if after_id is not None:
        query = query.where(accounts.c.id > after_id)
    rows = conn.execute(query.order_by(accounts.c.id).limit(limit)).all()
    return [Account(**row._mapping) for row in rows]


#: Leave a setting as it is (None means "use the server's default" for rate limits).
UNCHANGED: object = object()


def update_limits(
    conn: Connection,
    account_id: str,
    *,
    concurrency: int | None = None,
    rate_limit_reads: object = UNCHANGED,
    rate_limit_writes: object = UNCHANGED,
    output_retention_seconds: object = UNCHANGED,
) -> None:
    values: dict[str, object] = {}
    if output_retention_seconds is not UNCHANGED:
        values["output_retention_seconds"] = output_retention_seconds
    if concurrency is not None:
        values["concurrency_limit"] = concurrency
    if rate_limit_reads is not UNCHANGED:
        values["rate_limit_reads"] = rate_limit_reads
    if rate_limit_writes is not UNCHANGED:
        values["rate_limit_writes"] = rate_limit_writes
    if values:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def add_key(conn: Connection, key: ApiKey, key_hash: str) -> None:
    conn.execute(
        insert(api_keys).values(
            id=key.id,
            account_id=key.account_id,
            prefix=key.prefix,
            key_hash=key_hash,
            created_at=key.created_at,
            last_used_at=None,
            revoked_at=None,
        )
    )


def keys_of(conn: Connection, account_id: str) -> list[ApiKey]:
    rows = conn.execute(
        select(*_KEY_COLUMNS).where(api_keys.c.account_id == account_id).order_by(api_keys.c.id)
    ).all()
    return [ApiKey(*row) for row in rows]


def find_keys(conn: Connection, id_or_prefix: str) -> list[ApiKey]:
    rows = conn.execute(
        select(*_KEY_COLUMNS).where(
            or_(api_keys.c.id == id_or_prefix, api_keys.c.prefix == id_or_prefix)
        )
    ).all()
    return [ApiKey(*row) for row in rows]


_KEY_BY_HASH = Prepared(select(*_KEY_COLUMNS).where(api_keys.c.key_hash == bindparam("key_hash")))


def key_by_hash(conn: Connection, key_hash: str) -> ApiKey | None:
    row = _KEY_BY_HASH.first(conn, key_hash=key_hash)
    return ApiKey(**row) if row is not None else None


_AUTHENTICATE = Prepared(
    select(
        api_keys.c.id,
        api_keys.c.account_id,
        api_keys.c.revoked_at,
        accounts.c.rate_limit_reads,
        accounts.c.rate_limit_writes,
    )
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == bindparam("key_hash"))
)


def authenticate(conn: Connection, key_hash: str) -> dict[str, Any] | None:
    """The key with this hash and its account's rate-limit overrides."""
    return _AUTHENTICATE.first(conn, key_hash=key_hash)


def revoke_key(conn: Connection, key_id: str, now: int) -> None:
    conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def touch_keys(conn: Connection, used: Sequence[tuple[str, int]]) -> None:
    """Record when keys were last used (batched by the API)."""
    for key_id, at in used:
        conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < at),
            )
            .values(last_used_at=at)
        )
