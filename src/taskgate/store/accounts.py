"""Accounts, their API keys, and credit grants."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from taskgate.core.errors import Conflict
from taskgate.core.models import Account, ApiKey
from taskgate.store.prepared import Prepared
from taskgate.store.tables import accounts, api_keys, ledger

_ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.name,
    accounts.c.concurrency_limit,
    accounts.c.running,
    accounts.c.created_at,
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
    return Account(*row) if row is not None else None


_GET = Prepared(select(*_ACCOUNT_COLUMNS).where(accounts.c.id == bindparam("account_id")))


def get(conn: Connection, account_id: str) -> Account | None:
    row = _GET.first(conn, account_id=account_id)
    return Account(**row) if row is not None else None


def grant(conn: Connection, account_id: str, amount: int, now: int, note: str | None) -> None:
    conn.execute(
        insert(ledger).values(
            account_id=account_id,
            task_id=None,
            kind="grant",
            amount=amount,
            created_at=now,
            note=note,
        )
    )


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
