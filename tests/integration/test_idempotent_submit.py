"""Idempotent submission under concurrency: one key, one task, however many callers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from taskgate.composition import Services, build
from taskgate.core.errors import IdempotencyConflict
from taskgate.payloads import WorkflowSubmit
from taskgate.services.tasks import TaskView
from taskgate.store.tables import tasks
from tests.integration.taskrows import add_account, event_rows

CALLERS = 50


def _count_tasks(services: Services) -> int:
    return int(
        services.db.read_sync(
            lambda conn: conn.execute(select(func.count()).select_from(tasks)).scalar_one()
        )
    )


def _submit_concurrently(
    pick: Callable[[int], Services], account_id: str, key: str
) -> list[tuple[TaskView, bool]]:
    barrier = threading.Barrier(CALLERS)

    def call(i: int) -> tuple[TaskView, bool]:
        body = WorkflowSubmit(input={"seconds": 1}, metadata={"k": "v"})
        barrier.wait(timeout=30)
        return asyncio.run(pick(i).tasks.submit(account_id, "wait", body, key))

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        return list(pool.map(call, range(CALLERS)))


def _check_one_task(services: Services, results: list[tuple[TaskView, bool]], key: str) -> None:
    ids = {view.task.id for view, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    assert _count_tasks(services) == 1
    (task_id,) = ids
    assert [e["type"] for e in event_rows(services, task_id)] == ["task.created"]
    assert all(view.task.out_task_id == key for view, _ in results)


def test_fifty_concurrent_submits_with_one_key_make_one_task(services: Services) -> None:
    account = add_account(services, "acme")
    results = _submit_concurrently(lambda _i: services, account.id, "order-42")
    _check_one_task(services, results, "order-42")


def test_concurrent_submits_through_separate_connections(services: Services) -> None:
    """As if from several API processes: each has its own engines and writer, so
    the submits really race for SQLite's write lock."""
    account = add_account(services, "acme")
    others = [build(services.settings) for _ in range(4)]
    try:
        fleet = [services, *others]
        results = _submit_concurrently(lambda i: fleet[i % len(fleet)], account.id, "order-7")
    finally:
        for other in others:
            other.close()
    _check_one_task(services, results, "order-7")


def test_a_reused_key_with_a_different_request_is_refused(services: Services) -> None:
    account = add_account(services, "acme")
    first, created = asyncio.run(
        services.tasks.submit(account.id, "wait", WorkflowSubmit(input={"seconds": 1}), "k1")
    )
    assert created
    with pytest.raises(IdempotencyConflict):
        asyncio.run(
            services.tasks.submit(account.id, "wait", WorkflowSubmit(input={"seconds": 2}), "k1")
        )
    again, created = asyncio.run(
        services.tasks.submit(account.id, "wait", WorkflowSubmit(input={"seconds": 1}), "k1")
    )
    assert not created and again.task.id == first.task.id
    # Keys belong to an account: another account's same key makes its own task.
    other = add_account(services, "other")
    theirs, created = asyncio.run(
        services.tasks.submit(other.id, "wait", WorkflowSubmit(input={"seconds": 1}), "k1")
    )
    assert created and theirs.task.id != first.task.id
    assert _count_tasks(services) == 2
