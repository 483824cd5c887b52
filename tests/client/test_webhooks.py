"""``client.webhooks`` against a real server delivering to a receiver on 127.0.0.1:
every method, deliveries verified with ``verify_webhook``, and the errors."""

from __future__ import annotations

import pytest

from taskgate.client import (
    NOT_GIVEN,
    AsyncClient,
    Client,
    DeliveryObject,
    InvalidRequestError,
    NotFoundError,
    verify_webhook,
)
from tests.acceptance.apitools import Account
from tests.acceptance.receiver import fail_once, receiving
from tests.helpers import ServerProcess, wait_until

pytestmark = pytest.mark.acceptance


def delivered(client: Client, webhook_id: str, delivery_id: str, attempts: int) -> DeliveryObject:
    """The delivery, once delivered after ``attempts`` attempts."""

    def done() -> DeliveryObject | None:
        for found in client.webhooks.deliveries(webhook_id):
            if found.id == delivery_id and found.status == "delivered":
                return found if found.attempt_count >= attempts else None
        return None

    found: DeliveryObject = wait_until(done, timeout=20, message=f"{delivery_id} delivered")
    return found


def test_endpoints_deliveries_and_signatures(client: Client) -> None:
    # The first attempt fails; the retry succeeds.
    with receiving(fail_once()) as hook:
        url = hook.url()
        endpoint = client.webhooks.create(url, description="ci", enabled_events=["task.completed"])
        assert (endpoint.object, endpoint.url, endpoint.status) == (
            "webhook_endpoint",
            url,
            "enabled",
        )
        assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
        secret = endpoint.secret

        sent = client.webhooks.test(endpoint.id)
        assert (sent.event_type, sent.webhook_id) == ("webhook.test", endpoint.id)
        first, second = hook.wait_received(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == sent.event_id
        event = verify_webhook(second.body, second.headers, secret)
        assert (event.id, event.type, event.task) == (sent.event_id, "webhook.test", None)
        log = delivered(client, endpoint.id, sent.id, attempts=2)
        assert sorted(attempt.status_code or 0 for attempt in log.attempts) == [200, 500]

        again = client.webhooks.retry_delivery(endpoint.id, sent.id)
        assert again.id == sent.id
        assert hook.wait_received(3)[2].headers["webhook-id"] == sent.event_id

        # A task's completion, signed; the task travels in the event.
        task = client.tasks.create("wait", {"seconds": 0})
        client.tasks.wait(task.id, timeout=20)
        received = hook.wait_received(4)[3]
        event = verify_webhook(received.body, received.headers, secret)
        assert event.type == "task.completed"
        assert event.task is not None and (event.task.id, event.task.status) == (
            task.id,
            "completed",
        )

        # After a rotation, deliveries carry signatures of both secrets.
        rotated = client.webhooks.rotate_secret(endpoint.id)
        assert rotated.secret is not None and rotated.secret not in (secret, None)
        client.webhooks.test(endpoint.id)
        received = hook.wait_received(5)[4]
        assert len(received.headers["webhook-signature"].split()) == 2
        for key in (secret, rotated.secret):
            assert verify_webhook(received.body, received.headers, key).type == "webhook.test"

    changed = client.webhooks.update(endpoint.id, status="disabled", description=None)
    assert (changed.status, changed.description, changed.url) == ("disabled", None, url)
    kept = client.webhooks.update(endpoint.id, enabled_events=["task.failed"], url=NOT_GIVEN)
    assert (kept.enabled_events, kept.status, kept.secret) == (["task.failed"], "disabled", None)
    assert client.webhooks.get(endpoint.id).model_dump() == kept.model_dump()
    assert [found.id for found in client.webhooks.list(limit=1)] == [endpoint.id]

    gone = client.webhooks.delete(endpoint.id)
    assert (gone.id, gone.deleted) == (endpoint.id, True)
    assert list(client.webhooks.list()) == []
    for call in (
        lambda: client.webhooks.get(endpoint.id),
        lambda: client.webhooks.test(endpoint.id),
        lambda: client.webhooks.delete(endpoint.id),
        lambda: list(client.webhooks.deliveries(endpoint.id)),
    ):
        with pytest.raises(NotFoundError) as missing:
            call()
        assert missing.value.code == "webhook_not_found"


def test_bad_endpoints_are_refused(client: Client) -> None:
    for url in ("ftp://example.com/hook", "not a url"):
        with pytest.raises(InvalidRequestError) as refused:
            client.webhooks.create(url)
        assert (refused.value.status, refused.value.param) == (422, "url")
    with pytest.raises(InvalidRequestError) as refused:
        client.webhooks.create("http://127.0.0.1:9/hook", enabled_events=["task.nope"])
    assert refused.value.param == "enabled_events"
    assert list(client.webhooks.list()) == []


def test_async_webhooks(sdk_server: ServerProcess, account: Account) -> None:
    import asyncio

    async def scenario() -> None:
        async with AsyncClient(sdk_server.base_url, account.key) as client:
            made = await client.webhooks.create("http://127.0.0.1:9/hook")
            assert [found.id async for found in client.webhooks.list()] == [made.id]
            assert (await client.webhooks.delete(made.id)).deleted is True

    asyncio.run(scenario())


def test_a_task_callback_verifies_with_the_callback_secret(client: Client) -> None:
    with receiving() as hook:
        secret = client.webhooks.callback_secret()
        assert secret.startswith("whsec_")
        task = client.tasks.create(
            "wait",
            {"seconds": 0},
            callback_url=hook.url("/cb"),
            callback_events=["task.started"],
        )
        assert task.callback is not None
        assert (task.callback.url, task.callback.status) == (hook.url("/cb"), "pending")
        client.tasks.wait(task.id, timeout=20)
        received = hook.wait_accepted(2)
    events = [verify_webhook(r.body, r.headers, secret) for r in received]
    assert [event.type for event in events] == ["task.started", "task.completed"]
    assert all(event.task is not None and event.task.id == task.id for event in events)

    def marked() -> bool:
        callback = client.tasks.get(task.id).callback
        return callback is not None and callback.status == "delivered"

    wait_until(marked, message="the callback marked delivered")
