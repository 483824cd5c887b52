"""The composition root: builds the services from settings, once per process."""

from __future__ import annotations

from dataclasses import dataclass

from taskgate.services.accounts import AccountService
from taskgate.services.channel import LocalChannel
from taskgate.services.ops import OpsService
from taskgate.services.tasks import TaskService
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
    tasks: TaskService
    ops: OpsService

    def close(self) -> None:
        self.channel.close()
        self.db.close()


def build(settings: Settings, registry: Registry | None = None) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    registry = registry or Registry.load(settings.workflows)
    channel = LocalChannel(settings.data_dir)
    return Services(
        settings=settings,
        db=db,
        registry=registry,
        channel=channel,
        accounts=AccountService(db),
        tasks=TaskService(db, registry, channel),
        ops=OpsService(db),
    )
