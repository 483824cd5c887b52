"""The ledger's own guards, below what the API lets through."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from taskgate.composition import Services
from taskgate.core.errors import InvalidInput
from taskgate.store import ledger
from taskgate.store.db import Conn
from taskgate.store.tables import accounts
from taskgate.store.tables import ledger as ledger_table
from tests.integration.taskrows import T0, add_account


def _held(services: Services, account_id: str) -> tuple[int, int]:
    def read(conn: Conn) -> tuple[int, int]:
        available = conn.execute(
            select(accounts.c.credits_available).where(accounts.c.id == account_id)
        ).scalar_one()
        entries = conn.execute(select(func.count()).select_from(ledger_table)).scalar_one()
        return int(available), int(entries)

    return services.db.read_sync(read)


def test_a_balance_cannot_grow_past_the_largest_balance(services: Services) -> None:
    account = add_account(services, "rich")
    services.db.write_sync(
        lambda conn: ledger.grant(conn, account.id, ledger.MAX_BALANCE, T0, None)
    )
    full = _held(services, account.id)
    assert full == (ledger.MAX_BALANCE, 1)
    with pytest.raises(InvalidInput) as refused:
        services.db.write_sync(lambda conn: ledger.grant(conn, account.id, 1, T0, None))
    assert refused.value.param == "amount"
    assert _held(services, account.id) == full  # no entry, no change


@pytest.mark.parametrize("amount", [0, -1, ledger.MAX_BALANCE + 1])
def test_a_grant_is_a_positive_amount(services: Services, amount: int) -> None:
    account = add_account(services, "odd")
    with pytest.raises(ValueError, match="positive"):
        services.db.write_sync(lambda conn: ledger.grant(conn, account.id, amount, T0, None))
    assert _held(services, account.id) == (0, 0)
