"""The composition root: builds the services from settings, once per process.

:func:`build` gives a serving process (the API, a worker, a test) every service;
:func:`build_operator` gives an operator's command (accounts, keys, credits,
doctor) the database, accounts and credits only. The serving machinery (workflows
and their media libraries, storage, the wake-up channel, the event hub and the
deliverer) is imported by :func:`build` itself, so an operator's command loads
none of it and starts in about two thirds of the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskgate.services.accounts import AccountService
from taskgate.services.billing import BillingService
from taskgate.settings import Settings
from taskgate.store.db import Database

if TYPE_CHECKING:
    from taskgate.services.channel import Channel
    from taskgate.services.deliveries import Deliverer
    from taskgate.services.events import EventHub
    from taskgate.services.files import FileService
    from taskgate.services.maintenance import Maintenance
    from taskgate.services.ops import OpsService
    from taskgate.services.signing import Signer
    from taskgate.services.tasks import TaskService
    from taskgate.services.webhooks import WebhookService
    from taskgate.workflows.registry import Registry


@dataclass
class OperatorServices:
    """What an operator's command needs: accounts, their keys and their credits."""

    settings: Settings
    db: Database
    accounts: AccountService
    billing: BillingService

    def close(self) -> None:
        self.db.close()


def build_operator(settings: Settings) -> OperatorServices:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=1)
    return OperatorServices(
        settings=settings, db=db, accounts=AccountService(db), billing=BillingService(db)
    )


@dataclass
class Services:
    settings: Settings
    db: Database
    registry: Registry
    #: Wake-ups between processes: local sockets on SQLite, LISTEN/NOTIFY on PostgreSQL.
    channel: Channel
    accounts: AccountService
    billing: BillingService
    tasks: TaskService
    ops: OpsService
    #: Follows the outbox for this process's streams (started by the API only).
    events: EventHub
    signer: Signer
    webhooks: WebhookService
    files: FileService
    #: Delivers webhooks and callbacks (started by the API only).
    deliveries: Deliverer
    #: Events were written (here or by another process): wake their readers.
    events_written: Callable[[], None]
    #: Campaigns for the deployment's maintenance and runs it when elected (started
    #: by the API; worker processes run their own).
    maintenance: Maintenance

    def close(self) -> None:
        self.channel.close()
        self.db.close()


def build(settings: Settings, registry: Registry | None = None) -> Services:
    from taskgate.core.clock import to_us
    from taskgate.services.channel import WORKER, open_channel
    from taskgate.services.deliveries import Deliverer
    from taskgate.services.events import EventHub
    from taskgate.services.files import FilePolicy, FileService
    from taskgate.services.maintenance import maintenance_for
    from taskgate.services.ops import OpsService
    from taskgate.services.signing import Signer, load_secret
    from taskgate.services.storage import open_storage
    from taskgate.services.tasks import TaskService
    from taskgate.services.webhooks import WebhookService
    from taskgate.workflows.registry import Registry

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    registry = registry or Registry.load(settings.workflows)
    channel = open_channel(settings)
    hub = EventHub(db, poll_interval=settings.poll_interval_seconds)
    link_ttl = to_us(settings.link_ttl.total_seconds()) if settings.link_ttl else None
    signer = Signer(load_secret(settings), file_link_ttl_us=link_ttl)
    policy = FilePolicy(
        max_upload_bytes=settings.max_upload_bytes,
        input_retention_us=to_us(settings.input_retention.total_seconds()),
        allow_private_urls=settings.allow_private_urls,
    )
    files = FileService(db, open_storage(settings), signer, policy)
    deliverer = Deliverer(
        db,
        schedule=settings.webhook_retry_schedule,
        timeout=settings.webhook_timeout_seconds,
        disable_after=settings.webhook_disable_after_seconds,
        allow_private=settings.allow_private_urls,
        poll_interval=settings.poll_interval_seconds,
    )

    def events_written() -> None:
        hub.notify()
        deliverer.notify()

    def recovered(_tasks: object) -> None:
        events_written()
        channel.publish(WORKER, b"t")

    return Services(
        settings=settings,
        db=db,
        registry=registry,
        channel=channel,
        accounts=AccountService(db),
        billing=BillingService(db),
        tasks=TaskService(
            db,
            registry,
            channel,
            on_change=events_written,
            allow_private_urls=settings.allow_private_urls,
            files=files,
        ),
        ops=OpsService(db),
        events=hub,
        signer=signer,
        webhooks=WebhookService(db, allow_private_urls=settings.allow_private_urls),
        files=files,
        deliveries=deliverer,
        events_written=events_written,
        maintenance=maintenance_for(settings, db, files.storage, on_recovered=recovered),
    )
