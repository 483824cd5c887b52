"""The composition root: builds the services from settings, once per process."""

from __future__ import annotations

from dataclasses import dataclass

from taskgate.services.accounts import AccountService
from taskgate.services.billing import BillingService
from taskgate.services.channel import LocalChannel
from taskgate.services.events import EventHub
from taskgate.services.ops import OpsService
from taskgate.services.signing import Signer, load_secret
from taskgate.services.tasks import TaskService
from taskgate.services.webhooks import WebhookService
from taskgate.settings import Settings
from taskgate.store.db import Database
from taskgate.workflows.registry import Registry


@dataclass
class Services:
    settings: Settings
    db: Database
    registry: Registry
    channel: LocalChannel
    accounts: AccountService
    billing: BillingService
    tasks: TaskService
    ops: OpsService
    #: Follows the outbox for this process's streams (started by the API only).
    events: EventHub
    signer: Signer
    webhooks: WebhookService

    def close(self) -> None:
        self.channel.close()
        self.db.close()


def build(settings: Settings, registry: Registry | None = None) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    registry = registry or Registry.load(settings.workflows)
    channel = LocalChannel(settings.data_dir)
    hub = EventHub(db, poll_interval=settings.poll_interval_seconds)
    return Services(
        settings=settings,
        db=db,
        registry=registry,
        channel=channel,
        accounts=AccountService(db),
        billing=BillingService(db),
        tasks=TaskService(db, registry, channel, on_change=hub.notify),
        ops=OpsService(db),
        events=hub,
        signer=Signer(load_secret(settings)),
        webhooks=WebhookService(db, allow_private_urls=settings.allow_private_urls),
    )
