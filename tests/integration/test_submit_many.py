"""Submitting many tasks at once: all written with their events, or none."""

from __future__ import annotations

import asyncio

import pytest

from taskgate.composition import Services
from taskgate.core.errors import InvalidInput, WorkflowNotFound
from taskgate.payloads import WorkflowSubmit
from tests.integration.taskrows import add_account, event_count, event_rows


def test_submit_many_writes_every_task_and_its_created_event(services: Services) -> None:
    account = add_account(services, "acme")
    requests = [WorkflowSubmit(input={"seconds": i / 10}) for i in range(25)]
    created = asyncio.run(services.tasks.submit_many(account.id, "wait", requests))
    assert len({task.id for task in created}) == 25
    assert [task.input["seconds"] for task in created] == [i / 10 for i in range(25)]
    for task in created:
        assert [e["type"] for e in event_rows(services, task.id)] == ["task.created"]
    views, more, _ = asyncio.run(services.tasks.list(account.id, limit=100))
    assert len(views) == 25
    assert not more


@pytest.mark.parametrize(
    ("workflow", "bad", "error"),
    [("wait", {"seconds": -1}, InvalidInput), ("nope", {}, WorkflowNotFound)],
)
def test_one_bad_submission_writes_nothing(
    services: Services, workflow: str, bad: dict[str, object], error: type[Exception]
) -> None:
    account = add_account(services, "acme")
    requests = [WorkflowSubmit(input={"seconds": 1}), WorkflowSubmit(input=bad)]
    with pytest.raises(error):
        asyncio.run(services.tasks.submit_many(account.id, workflow, requests))
    assert event_count(services) == 0
    views, _, _ = asyncio.run(services.tasks.list(account.id))
    assert views == []
