"""The deliverer in-process, where the network is scripted: a webhook host that
resolved to a public address when its endpoint was saved and resolves to 127.0.0.1
at delivery (DNS rebinding) gets no connection, and the attempt records
``blocked_address``. No traffic leaves the machine."""

from __future__ import annotations

import asyncio

from taskgate.api.presenters import event_object
from taskgate.composition import Services
from taskgate.payloads import TaskSubmit
from taskgate.services.deliveries import Deliverer
from taskgate.services.webhooks import WebhookService
from tests.integration.test_netguard_connect import (
    PUBLIC,
    LoopbackOnly,
    ScriptedResolver,
    hook_server,
)


def test_a_rebound_webhook_host_is_blocked_at_delivery(services: Services) -> None:
    account = services.accounts.create_account("rebind", credits="10", concurrency=1)

    async def scenario() -> None:
        async with hook_server() as hooks:
            webhooks = WebhookService(
                services.db, allow_private_urls=False, resolve=ScriptedResolver([PUBLIC])
            )
            endpoint = await webhooks.create(
                account.id,
                url=f"http://hooks.example.com:{hooks.port}/hook",
                enabled_events=["task.created"],
            )
            await services.tasks.submit(
                account.id, "wait", TaskSubmit(workflow="wait", input={}), None
            )
            backend = LoopbackOnly()
            deliverer = Deliverer(
                services.db,
                schedule=(60.0,),
                timeout=2.0,
                disable_after=3600.0,
                allow_private=False,
                poll_interval=0.05,
                resolve=ScriptedResolver(["127.0.0.1"]),
                backend=backend,
            )
            deliverer.start(lambda event: event_object(event, "http://taskgate.test"))
            try:
                for _ in range(400):
                    found, _more = await deliverer.list(account.id, endpoint.id)
                    # (The page and its attempts are two reads: wait for both.)
                    if found and found[0].attempts and found[0].delivery.last_error:
                        break
                    await asyncio.sleep(0.025)
            finally:
                await deliverer.stop()
            [view] = found
            assert [a.error for a in view.attempts] == ["blocked_address"]
            assert view.attempts[0].status_code is None
            assert view.delivery.status == "pending"
            assert view.delivery.last_error == "blocked_address"
            assert backend.connects == []
            assert hooks.accepted == 0

    asyncio.run(scenario())
