"""Credits: grants, balances, usage, and the invariant check.

Reservations, charges and refunds are written by the task transitions themselves
(``taskgate.store.tasks`` and ``taskgate.store.queue``), in the transaction that
changes the task; this service grants credits and reads what the ledger says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from taskgate.core.clock import MICROS, now_us
from taskgate.core.errors import AccountNotFound
from taskgate.core.models import Account, LedgerEntry
from taskgate.services.accounts import parse_amount
from taskgate.store import accounts as accounts_repo
from taskgate.store import ledger
from taskgate.store import tasks as tasks_repo
from taskgate.store.db import Conn, Database
from taskgate.store.ledger import Violation

__all__ = ["Balance", "BillingService", "Violation", "period_start"]


def period_start(now: int) -> int:
    """The start of the billing period holding ``now``: its calendar month, UTC."""
    moment = datetime.fromtimestamp(now / MICROS, tz=UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp()) * MICROS


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's credits and work, in millicredits and task counts."""

    account: Account
    available: int
    reserved: int
    granted: int
    charged_total: int
    charged_period: int
    period_start: int
    queued: int


class BillingService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def grant(self, account: str, amount: str, note: str | None = None) -> Balance:
        """Add credits (a decimal string, ``"12.5"``) to an account (name or id)."""
        millis = parse_amount(amount, "amount")

        def write(conn: Conn) -> Balance:
            owner = _find(conn, account)
            ledger.grant(conn, owner.id, millis, now_us(), note)
            return _balance(conn, owner.id, now_us())

        return self._db.write_sync(write)

    def balance(self, account: str) -> Balance:
        return self._db.read_sync(lambda conn: _balance(conn, _find(conn, account).id, now_us()))

    async def usage(self, account_id: str) -> Balance:
        """The calling account's balance (``GET /v1/usage``)."""
        return await self._db.read(lambda conn: _balance(conn, account_id, now_us()))

    def entries(self, account: str, *, limit: int = 50) -> list[LedgerEntry]:
        """The account's latest ledger entries, newest first."""
        return self._db.read_sync(
            lambda conn: ledger.entries(conn, _find(conn, account).id, limit=limit)
        )

    def violations(self) -> list[Violation]:
        """Every broken credit invariant (``taskgate doctor``), read in one transaction
        so that no task moves between the sums."""
        return self._db.write_sync(ledger.violations)


def _find(conn: Conn, account: str) -> Account:
    found = accounts_repo.find(conn, account)
    if found is None:
        raise AccountNotFound(f"No account {account!r}.")
    return found


def _balance(conn: Conn, account_id: str, now: int) -> Balance:
    account = accounts_repo.get(conn, account_id)
    if account is None:
        raise AccountNotFound(f"No account {account_id!r}.")
    start = period_start(now)
    return Balance(
        account=account,
        available=account.credits_available,
        reserved=account.credits_reserved,
        # available = grants − charged − open reservations
        granted=account.credits_available + account.credits_charged + account.credits_reserved,
        charged_total=account.credits_charged,
        charged_period=ledger.charged_since(conn, account_id, start),
        period_start=start,
        queued=tasks_repo.count_queued(conn, account_id),
    )
