"""Credits under random interleavings, against an independent model.

A hypothesis state machine submits, claims, completes, fails, retries and cancels
tasks of several accounts, loses workers, and grants credits, all through the real
services and store on a SQLite file (and on PostgreSQL). A plain-Python model
predicts every account's available, reserved and charged credits and every task's
charge and refund; after each step the database must agree with it, ``taskgate
doctor``'s check must find nothing, and every terminal task must hold reserved =
charged + refunded.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from taskgate.composition import Services, build
from taskgate.core.clock import now_us
from taskgate.core.errors import InsufficientCredits
from taskgate.core.models import Task
from taskgate.core.money import format_credits
from taskgate.core.states import TaskStatus
from taskgate.payloads import WorkflowSubmit
from taskgate.store import ledger, migrate, queue
from taskgate.store.queue import Finish, Lease
from taskgate.store.tables import accounts, tasks
from tests.conftest import fast_settings
from tests.databases import PostgresServer

ACCOUNTS = ("ann", "bob", "cyd")
LEASE_US = 60 * 1_000_000
# Far past any lease: a worker that stops renewing is lost at once.
LATER_US = 10 * LEASE_US
MAX_ATTEMPTS = 3  # the wait workflow's

costs = st.integers(min_value=0, max_value=5_000)  # millicredits


@dataclass
class ModelAccount:
    id: str
    available: int
    reserved: int = 0
    charged: int = 0


@dataclass
class ModelTask:
    account: str
    reserved: int
    status: str = "queued"
    attempts: int = 0
    lease: Lease | None = None
    cancel_requested: bool = False
    charged: int | None = None
    refunded: int | None = None


class CreditMachine(RuleBasedStateMachine):
    #: Where each run gets a fresh PostgreSQL database; None: a SQLite file.
    postgres: PostgresServer | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="taskgate-credits-"))
        self.url = self.postgres.create() if self.postgres is not None else None
        self.services: Services = build(fast_settings(self.dir / "data", database_url=self.url))
        migrate.upgrade(self.services.db)
        self.accounts: dict[str, ModelAccount] = {}
        self.tasks: dict[str, ModelTask] = {}
        self.worker = 0

    def teardown(self) -> None:
        self.services.close()
        if self.postgres is not None and self.url is not None:
            self.postgres.drop(self.url)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------

    def _write(self, fn: Any) -> Any:
        return self.services.db.write_sync(fn)

    def _in(self, *statuses: str) -> list[str]:
        return sorted(tid for tid, t in self.tasks.items() if t.status in statuses)

    def _end(self, task_id: str, status: str, charge: int) -> None:
        """The model's view of a task becoming terminal."""
        task = self.tasks[task_id]
        account = self.accounts[task.account]
        charged = min(charge, task.reserved) if status == "completed" else 0
        task.status, task.charged, task.refunded = status, charged, task.reserved - charged
        task.lease = None
        account.reserved -= task.reserved
        account.available += task.reserved - charged
        account.charged += charged

    def _apply(self, changed: list[Task]) -> None:
        """Check what the store changed against what the model expected it to do."""
        for row in changed:
            model = self.tasks[row.id]
            assert row.status.value == model.status, (row.id, row.status, model.status)

    # -- rules ---------------------------------------------------------------

    @precondition(lambda self: not self.accounts)
    @rule(grants=st.tuples(costs, costs, costs))
    def open_accounts(self, grants: tuple[int, int, int]) -> None:
        for name, grant in zip(ACCOUNTS, grants, strict=True):
            account = self.services.accounts.create_account(
                name, credits=format_credits(grant), concurrency=2
            )
            self.accounts[name] = ModelAccount(account.id, available=grant)

    @precondition(lambda self: bool(self.accounts))
    @rule(name=st.sampled_from(ACCOUNTS), amount=st.integers(min_value=1, max_value=5_000))
    def grant(self, name: str, amount: int) -> None:
        self.services.billing.grant(name, format_credits(amount))
        self.accounts[name].available += amount

    @precondition(lambda self: bool(self.accounts))
    @rule(name=st.sampled_from(ACCOUNTS), cost=costs)
    def submit(self, name: str, cost: int) -> None:
        account = self.accounts[name]
        request = WorkflowSubmit(input={"credits": format_credits(cost)})
        if cost > account.available:
            with pytest.raises(InsufficientCredits) as refused:
                asyncio.run(self.services.tasks.submit(account.id, "wait", request, None))
            assert (refused.value.needed, refused.value.available) == (cost, account.available)
            return
        view, created = asyncio.run(self.services.tasks.submit(account.id, "wait", request, None))
        assert created
        assert view.task.reserved_credits == cost
        account.available -= cost
        account.reserved += cost
        self.tasks[view.task.id] = ModelTask(name, cost)

    @precondition(lambda self: bool(self.accounts))
    @rule(limit=st.integers(min_value=1, max_value=4))
    def claim(self, limit: int) -> None:
        self.worker += 1
        claimed: list[Task] = self._write(
            lambda conn: queue.claim(
                conn,
                worker_id=f"worker-{self.worker}",
                queues=["default"],
                limit=limit,
                now=now_us(),
                lease_us=LEASE_US,
            )
        )
        for task in claimed:
            model = self.tasks[task.id]
            assert model.status == "queued", (task.id, model.status)
            assert task.worker_id is not None
            model.status, model.attempts = "running", task.attempts
            model.lease = Lease(task.id, task.worker_id, task.attempts)

    @precondition(lambda self: bool(self._in("running")))
    @rule(data=st.data(), price=costs)
    def complete(self, data: st.DataObject, price: int) -> None:
        task_id = data.draw(st.sampled_from(self._in("running")))
        model = self.tasks[task_id]
        assert model.lease is not None
        outcome = Finish(model.lease, TaskStatus.COMPLETED, output=[], charge=price)
        if model.cancel_requested:
            self._end(task_id, "cancelled", 0)  # a cancel asked for wins
        else:
            self._end(task_id, "completed", price)
        done = self._write(lambda conn: queue.finish(conn, outcome, now_us()))
        assert done is not None
        self._apply([done])

    @precondition(lambda self: bool(self._in("running")))
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data: st.DataObject, retry: bool) -> None:
        task_id = data.draw(st.sampled_from(self._in("running")))
        model = self.tasks[task_id]
        assert model.lease is not None
        error = {"code": "boom", "message": "failed", "retryable": retry}
        if retry:
            outcome = Finish(model.lease, TaskStatus.QUEUED, error=error, retry_at=now_us())
        else:
            outcome = Finish(model.lease, TaskStatus.FAILED, error=error)
        if model.cancel_requested:
            self._end(task_id, "cancelled", 0)
        elif retry:
            model.status, model.lease = "queued", None  # the reservation stays
        else:
            self._end(task_id, "failed", 0)
        done = self._write(lambda conn: queue.finish(conn, outcome, now_us()))
        assert done is not None
        self._apply([done])

    @precondition(lambda self: bool(self._in("queued", "running")))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._in("queued", "running")))
        model = self.tasks[task_id]
        account_id = self.accounts[model.account].id
        view = asyncio.run(self.services.tasks.cancel(account_id, task_id))
        if model.status == "queued":
            self._end(task_id, "cancelled", 0)
        else:
            model.cancel_requested = True
        self._apply([view.task])

    @precondition(lambda self: bool(self._in("running")))
    @rule()
    def lose_workers(self) -> None:
        """Every running task's worker stops; their leases run out."""
        lost = self._in("running")
        for task_id in lost:
            model = self.tasks[task_id]
            if model.cancel_requested:
                self._end(task_id, "cancelled", 0)
            elif model.attempts < MAX_ATTEMPTS:
                model.status, model.lease = "queued", None
            else:
                self._end(task_id, "failed", 0)
        changed = self._write(
            lambda conn: queue.recover_expired(conn, now_us() + LATER_US, backoff_us=0)
        )
        assert sorted(t.id for t in changed) == lost
        self._apply(changed)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        def read(conn: Any) -> tuple[dict[str, tuple[int, int, int]], dict[str, Any]]:
            held = {
                row.id: (row.credits_available, row.credits_reserved, row.credits_charged)
                for row in conn.execute(select(accounts))
            }
            rows = {row.id: row for row in conn.execute(select(tasks))}
            return held, rows

        held, rows = self.services.db.read_sync(read)
        for name, account in self.accounts.items():
            assert held[account.id] == (account.available, account.reserved, account.charged), name
        assert set(rows) == set(self.tasks)
        for task_id, model in self.tasks.items():
            row = rows[task_id]
            assert row.status == model.status, task_id
            assert row.reserved_credits == model.reserved
            assert (row.charged_credits, row.refunded_credits) == (model.charged, model.refunded)
            if model.status in ("completed", "failed", "cancelled"):
                assert row.reserved_credits == row.charged_credits + row.refunded_credits

    @invariant()
    def doctor_finds_nothing(self) -> None:
        assert self.services.db.write_sync(ledger.violations) == []

    @invariant()
    def balances_add_up(self) -> None:
        """balance = grants − charged − open reservations, by the ledger's own sums."""
        for account in self.accounts.values():
            sums = self.services.db.read_sync(partial(_totals, account_id=account.id))
            assert sums.available == sums.granted - sums.charged - sums.open_reservations
            assert sums.available == account.available


def _totals(conn: Any, account_id: str) -> ledger.Totals:
    return ledger.totals(conn, account_id)


CreditMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_credits_hold_under_random_interleavings = CreditMachine.TestCase


def test_credits_hold_under_random_interleavings_on_postgresql(
    postgres_server: PostgresServer,
) -> None:
    """The same machine on PostgreSQL, each run on a database of its own (fewer
    runs: a database and PostgreSQL's commits cost more than a SQLite file's)."""

    class OnPostgres(CreditMachine):
        postgres = postgres_server

    run_state_machine_as_test(  # type: ignore[no-untyped-call, unused-ignore]
        OnPostgres,
        settings=settings(
            max_examples=8,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
