"""Credits under concurrent reservations and refunds, as from several API
processes at once (each caller on its own connections): no credit is spent twice
and none is lost."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from taskgate.composition import Services, build
from taskgate.core.errors import InsufficientCredits
from taskgate.payloads import WorkflowSubmit
from taskgate.store import ledger
from tests.integration.taskrows import task_row

T = TypeVar("T")
CALLERS = 24
PROCESSES = 4
COST = 30  # millicredits per task


def _at_once(calls: list[Callable[[], T]]) -> list[T | BaseException]:
    """Run the calls on threads released together; each one's result or error."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | BaseException:
        barrier.wait(timeout=30)
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _balance(services: Services, account_id: str) -> tuple[int, int, int]:
    account = services.accounts.find_account(account_id)
    return account.credits_available, account.credits_reserved, account.credits_charged


def test_concurrent_reservations_neither_overspend_nor_lose_credit(services: Services) -> None:
    account = services.accounts.create_account("tight", credits="0.500", concurrency=2)
    fits = 500 // COST  # 16 of the 24 submissions fit
    fleet = [services, *(build(services.settings) for _ in range(PROCESSES - 1))]
    request = WorkflowSubmit(input={"credits": f"0.{COST:03d}"})

    def submit(i: int) -> Callable[[], str]:
        node = fleet[i % PROCESSES]
        return lambda: asyncio.run(node.tasks.submit(account.id, "wait", request, None))[0].task.id

    def cancel(i: int, task_id: str) -> Callable[[], str]:
        node = fleet[i % PROCESSES]
        return lambda: asyncio.run(node.tasks.cancel(account.id, task_id)).task.id

    try:
        results = _at_once([submit(i) for i in range(CALLERS)])
        made = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, InsufficientCredits)]
        assert len(made) == fits and len(refused) == CALLERS - fits, results
        assert _balance(services, account.id) == (500 - fits * COST, fits * COST, 0)

        # Refunds and new reservations race: every cancel frees COST that a
        # submit may take at once.
        results = _at_once(
            [cancel(i, task_id) for i, task_id in enumerate(made)]
            + [submit(i) for i in range(CALLERS)]
        )
        cancelled = results[: len(made)]
        assert all(isinstance(r, str) for r in cancelled), cancelled
        second = [r for r in results[len(made) :] if isinstance(r, str)]
        errors = [r for r in results[len(made) :] if not isinstance(r, str)]
        assert all(isinstance(e, InsufficientCredits) for e in errors), errors
        assert len(second) <= fits
    finally:
        for node in fleet[1:]:
            node.close()

    available, reserved, charged = _balance(services, account.id)
    assert (reserved, charged) == (len(second) * COST, 0)
    assert available + reserved == 500
    assert all(task_row(services, t)["status"] == "cancelled" for t in made)
    assert services.db.write_sync(ledger.violations) == []
