"""Reads kept by ``Database.read_memo``: served again while the database is
unchanged, never once another connection — of this process or another — has
committed a change."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, select, update

from taskgate.composition import Services
from taskgate.store.db import MEMO_ENTRIES
from taskgate.store.tables import accounts
from tests.integration.taskrows import add_account


def _reader(account_id: str, calls: list[int]) -> Callable[[Connection], int]:
    def read(conn: Connection) -> int:
        calls.append(1)
        found = conn.execute(
            select(accounts.c.concurrency_limit).where(accounts.c.id == account_id)
        ).scalar_one()
        return int(found)

    return read


def _set_limit(services: Services, account_id: str, limit: int) -> None:
    services.db.write_sync(
        lambda conn: conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(concurrency_limit=limit)
        )
    )


def test_a_kept_read_is_served_again_only_while_nothing_changed(services: Services) -> None:
    account = add_account(services, "memo", concurrency=3)
    calls: list[int] = []
    read = _reader(account.id, calls)

    async def twice() -> tuple[int, int]:
        return (
            await services.db.read_memo(("limit", account.id), read),
            await services.db.read_memo(("limit", account.id), read),
        )

    assert asyncio.run(twice()) == (3, 3)
    # SQLite keeps the first answer; PostgreSQL reads every time.
    assert len(calls) == (1 if services.db.is_sqlite else 2)

    _set_limit(services, account.id, 5)
    assert asyncio.run(twice()) == (5, 5)
    # Another key is read on its own, and does not push the first one out.
    other: list[int] = []
    kept = services.db.read_memo(("other", account.id), _reader(account.id, other))
    assert asyncio.run(kept) == 5
    assert other == [1]
    before = len(calls)
    assert asyncio.run(services.db.read_memo(("limit", account.id), read)) == 5
    assert len(calls) - before == (0 if services.db.is_sqlite else 1)


@pytest.fixture
def sqlite_services(services: Services) -> Services:
    if not services.db.is_sqlite:
        pytest.skip("nothing is kept on PostgreSQL: the first test shows every read reaches it")
    return services


def test_a_change_committed_by_another_process_is_read_at_once(sqlite_services: Services) -> None:
    services = sqlite_services
    account = add_account(services, "memo-other", concurrency=2)
    calls: list[int] = []
    read = _reader(account.id, calls)
    assert asyncio.run(services.db.read_memo(("limit", account.id), read)) == 2
    assert asyncio.run(services.db.read_memo(("limit", account.id), read)) == 2
    assert len(calls) == 1

    path = services.db.url.removeprefix("sqlite:///")
    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('update accounts set concurrency_limit = 9 where id = ?', (sys.argv[2],)); "
        "c.commit()"
    )
    subprocess.run([sys.executable, "-c", script, path, account.id], check=True, timeout=60)

    assert asyncio.run(services.db.read_memo(("limit", account.id), read)) == 9
    assert len(calls) == 2


def test_the_kept_reads_are_bounded(sqlite_services: Services) -> None:
    services = sqlite_services
    account = add_account(services, "memo-bound", concurrency=1)
    calls: list[int] = []
    read = _reader(account.id, calls)

    async def many() -> None:
        for key in range(MEMO_ENTRIES + 1):
            await services.db.read_memo(key, read)
        # The oldest key was dropped; the newest is still kept.
        await services.db.read_memo(MEMO_ENTRIES, read)
        await services.db.read_memo(0, read)

    asyncio.run(many())
    assert len(calls) == MEMO_ENTRIES + 2
