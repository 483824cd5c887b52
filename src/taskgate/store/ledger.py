"""The credit ledger: grants, reservations, charges and refunds.

Entries are only ever inserted. Each one is written in the transaction of the
change it records (a grant, a submit, a task's end), together with the account's
counters ``credits_available``, ``credits_reserved`` and ``credits_charged``, which
are what the ledger sums to and are checked against it by :func:`violations`.
Movements of zero are not recorded. Amounts are millicredits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, case, func, insert, select, update

from taskgate.core.errors import InsufficientCredits, InvalidInput
from taskgate.core.models import LedgerEntry, Task
from taskgate.core.states import TaskStatus
from taskgate.store.prepared import Prepared
from taskgate.store.tables import accounts, ledger, tasks

GRANT, RESERVE, SETTLE, REFUND = "grant", "reserve", "settle", "refund"

_INSERT = Prepared(
    insert(ledger).values({c.name: bindparam(c.name) for c in ledger.c if c.name != "id"})
)
#: No account holds more than this many millicredits (2^62: far from overflowing
#: the 64-bit columns, whatever is reserved and charged).
MAX_BALANCE = 2**62
_GRANT = Prepared(
    update(accounts)
    .where(
        accounts.c.id == bindparam("account_id"),
        accounts.c.credits_available + accounts.c.credits_reserved
        <= MAX_BALANCE - bindparam("amount"),
    )
    .values(credits_available=accounts.c.credits_available + bindparam("amount"))
)
# The balance check and the hold in one statement: no other transaction can spend
# the same credits between a read and a write.
_RESERVE = Prepared(
    update(accounts)
    .where(
        accounts.c.id == bindparam("account_id"),
        accounts.c.credits_available >= bindparam("amount"),
    )
    .values(
        credits_available=accounts.c.credits_available - bindparam("amount"),
        credits_reserved=accounts.c.credits_reserved + bindparam("amount"),
    )
)
_AVAILABLE = Prepared(
    select(accounts.c.credits_available).where(accounts.c.id == bindparam("account_id"))
)
_RELEASE = Prepared(
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(
        credits_available=accounts.c.credits_available + bindparam("refunded"),
        credits_reserved=accounts.c.credits_reserved - bindparam("reserved"),
        credits_charged=accounts.c.credits_charged + bindparam("charged"),
    )
)


def _entry(
    account_id: str, task_id: str | None, kind: str, amount: int, now: int, note: str | None = None
) -> dict[str, object]:
    return {
        "account_id": account_id,
        "task_id": task_id,
        "kind": kind,
        "amount": amount,
        "created_at": now,
        "note": note,
    }


def grant(conn: Connection, account_id: str, amount: int, now: int, note: str | None) -> None:
    """Add credits to an account."""
    if not 0 < amount <= MAX_BALANCE:
        raise ValueError("a grant is a positive amount")
    if not _GRANT.execute(conn, account_id=account_id, amount=amount):
        raise InvalidInput(
            "The account's balance would exceed the largest balance an account can hold.",
            param="amount",
        )
    _INSERT.execute(conn, **_entry(account_id, None, GRANT, amount, now, note))


def reserve(conn: Connection, task: Task, now: int) -> None:
    """Hold ``task.reserved_credits`` of its account's credits for it, or raise
    :class:`InsufficientCredits` having written nothing."""
    amount = task.reserved_credits
    if amount == 0:
        return
    if not _RESERVE.execute(conn, account_id=task.account_id, amount=amount):
        available = int(_AVAILABLE.scalar(conn, account_id=task.account_id) or 0)
        raise InsufficientCredits(needed=amount, available=available)
    _INSERT.defer(conn, **_entry(task.account_id, task.id, RESERVE, amount, now))


def close(conn: Connection, ended: Iterable[Task], now: int) -> None:
    """Settle the reservations of tasks that just became terminal.

    Each task's row already says how its reservation splits (``charged_credits``
    and ``refunded_credits``, set by the statement that ended it); this records
    the split and releases the hold.
    """
    entries: list[dict[str, object]] = []
    released: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for task in ended:
        if task.reserved_credits == 0:
            continue
        charged = task.charged_credits or 0
        refunded = task.refunded_credits or 0
        if charged:
            entries.append(_entry(task.account_id, task.id, SETTLE, charged, now))
        if refunded:
            entries.append(_entry(task.account_id, task.id, REFUND, refunded, now))
        totals = released[task.account_id]
        totals[0] += task.reserved_credits
        totals[1] += refunded
        totals[2] += charged
    _INSERT.defer_many(conn, entries)
    # In account order, as every transaction locks accounts' rows (PostgreSQL).
    for account_id, (reserved, refunded, charged) in sorted(released.items()):
        _RELEASE.defer(
            conn, account_id=account_id, reserved=reserved, refunded=refunded, charged=charged
        )


def split(charge: ColumnElement[int]) -> dict[str, ColumnElement[Any]]:
    """Column values that end a task's reservation: ``charge`` (a bound expression
    of millicredits, NULL for a task that is not ending) is charged, capped at the
    reservation, and the rest refunded."""
    reserved = tasks.c.reserved_credits
    charged = case(
        (charge.is_(None), None),
        (charge < reserved, charge),
        else_=reserved,
    )
    return {"charged_credits": charged, "refunded_credits": reserved - charged}


# -- reading -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """An account's credits as the ledger sums them, in millicredits."""

    granted: int
    reserved: int  # every reservation ever made
    charged: int
    refunded: int

    @property
    def open_reservations(self) -> int:
        return self.reserved - self.charged - self.refunded

    @property
    def available(self) -> int:
        """grants − charged − open reservations."""
        return self.granted - self.charged - self.open_reservations


def totals(conn: Connection, account_id: str) -> Totals:
    rows = conn.execute(
        select(ledger.c.kind, func.coalesce(func.sum(ledger.c.amount), 0))
        .where(ledger.c.account_id == account_id)
        .group_by(ledger.c.kind)
    ).all()
    sums = {kind: int(amount) for kind, amount in rows}
    return Totals(
        sums.get(GRANT, 0), sums.get(RESERVE, 0), sums.get(SETTLE, 0), sums.get(REFUND, 0)
    )


_CHARGED_SINCE = Prepared(
    select(func.coalesce(func.sum(ledger.c.amount), 0)).where(
        ledger.c.account_id == bindparam("account_id"),
        ledger.c.kind == SETTLE,
        ledger.c.created_at >= bindparam("since"),
    )
)


def charged_since(conn: Connection, account_id: str, since: int) -> int:
    return int(_CHARGED_SINCE.scalar(conn, account_id=account_id, since=since))


def entries(
    conn: Connection, account_id: str, *, limit: int = 50, before_id: int | None = None
) -> list[LedgerEntry]:
    """Newest first."""
    query = select(ledger).where(ledger.c.account_id == account_id)
    if before_id is not None:
        query = query.where(ledger.c.id < before_id)
    rows = conn.execute(query.order_by(ledger.c.id.desc()).limit(limit)).mappings()
    return [LedgerEntry(**row) for row in rows]


# -- checking ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken credit invariant, with the ids involved."""

    account_id: str
    task_id: str | None
    entry_ids: tuple[int, ...]
    message: str


_TERMINAL = (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)


def violations(conn: Connection) -> list[Violation]:
    """Every place where the ledger, the accounts' counters and the tasks disagree.

    For each account: available = grants − charged − open reservations, and the
    counters equal the ledger's sums. For each task with ledger entries: one
    reservation at most, matching the task's; a terminal task's reservation is
    fully charged or refunded (reserved = charged + refunded) as its row says; a
    task that is not terminal has charged and refunded nothing.
    """
    found: list[Violation] = []
    for account_id, available, reserved, charged in conn.execute(
        select(
            accounts.c.id,
            accounts.c.credits_available,
            accounts.c.credits_reserved,
            accounts.c.credits_charged,
        ).order_by(accounts.c.id)
    ).all():
        sums = totals(conn, account_id)
        if (sums.available, sums.open_reservations, sums.charged) != (
            available,
            reserved,
            charged,
        ):
            found.append(
                Violation(
                    account_id,
                    None,
                    (),
                    f"the ledger gives available {sums.available}, reserved "
                    f"{sums.open_reservations} and charged {sums.charged} (grants "
                    f"{sums.granted}, reservations {sums.reserved}, refunds {sums.refunded}); "
                    f"the account holds {available}, {reserved} and {charged}",
                )
            )
    by_task: dict[str, list[LedgerEntry]] = defaultdict(list)
    for row in conn.execute(
        select(ledger).where(ledger.c.task_id.isnot(None)).order_by(ledger.c.id)
    ).mappings():
        entry = LedgerEntry(**row)
        assert entry.task_id is not None
        by_task[entry.task_id].append(entry)
    known: dict[str, tuple[str, str, int, int | None, int | None]] = {
        row[0]: (row[1], row[2], row[3], row[4], row[5])
        for row in conn.execute(
            select(
                tasks.c.id,
                tasks.c.account_id,
                tasks.c.status,
                tasks.c.reserved_credits,
                tasks.c.charged_credits,
                tasks.c.refunded_credits,
            )
        ).all()
    }
    for task_id, task_entries in by_task.items():
        found.extend(_task_violations(task_id, task_entries, known.get(task_id)))
    for task_id, (account_id, status, reserved, charged, refunded) in known.items():
        if status in _TERMINAL and reserved != (charged or 0) + (refunded or 0):
            found.append(
                Violation(
                    account_id,
                    task_id,
                    (),
                    f"the {status} task reserved {reserved} but its row says charged "
                    f"{charged}, refunded {refunded}",
                )
            )
        elif reserved and task_id not in by_task:
            found.append(
                Violation(
                    account_id, task_id, (), f"the task holds {reserved} with no ledger entry"
                )
            )
    return found


def _task_violations(
    task_id: str,
    entries_: Sequence[LedgerEntry],
    row: tuple[str, str, int, int | None, int | None] | None,
) -> list[Violation]:
    ids = tuple(e.id for e in entries_)
    account_id = entries_[0].account_id

    def violation(message: str) -> Violation:
        return Violation(account_id, task_id, ids, message)

    sums: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for entry in entries_:
        sums[entry.kind] += entry.amount
        counts[entry.kind] += 1
        if entry.account_id != account_id:
            return [violation("the task's entries belong to different accounts")]
    problems: list[Violation] = []
    if counts[GRANT]:
        problems.append(violation("a grant names a task"))
    if counts[RESERVE] != 1 or counts[SETTLE] > 1 or counts[REFUND] > 1:
        problems.append(
            violation(
                f"expected one reservation and at most one charge and one refund, found "
                f"{counts[RESERVE]}, {counts[SETTLE]} and {counts[REFUND]}"
            )
        )
    closed = sums[SETTLE] + sums[REFUND]
    if row is None:
        # A deleted task was terminal: its reservation must be closed.
        if closed != sums[RESERVE]:
            problems.append(
                violation(
                    f"the deleted task reserved {sums[RESERVE]} but was charged "
                    f"{sums[SETTLE]} and refunded {sums[REFUND]}"
                )
            )
        return problems
    owner, status, reserved, charged, refunded = row
    if owner != account_id:
        problems.append(violation(f"the entries belong to {account_id}, the task to {owner}"))
    if sums[RESERVE] != reserved:
        problems.append(violation(f"the ledger reserved {sums[RESERVE]}, the task says {reserved}"))
    if status in _TERMINAL:
        if closed != sums[RESERVE]:
            problems.append(
                violation(
                    f"the {status} task reserved {sums[RESERVE]} but was charged "
                    f"{sums[SETTLE]} and refunded {sums[REFUND]}"
                    + (" (an open reservation)" if closed < sums[RESERVE] else "")
                )
            )
        if (sums[SETTLE], sums[REFUND]) != (charged or 0, refunded or 0):
            problems.append(
                violation(
                    f"the ledger charged {sums[SETTLE]} and refunded {sums[REFUND]}, the "
                    f"task says {charged} and {refunded}"
                )
            )
    elif closed:
        problems.append(
            violation(
                f"the {status} task was already charged {sums[SETTLE]} and refunded {sums[REFUND]}"
            )
        )
    return problems
