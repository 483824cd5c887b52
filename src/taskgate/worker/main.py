"""Running worker slots as a process: ``taskgate worker``, or the child of ``serve``."""

from __future__ import annotations

import asyncio
import logging
import signal

from taskgate import logs
from taskgate.services.ops import schema_is_current
from taskgate.services.signing import MissingSecretKey, require_secret_key
from taskgate.settings import Settings
from taskgate.store import migrate
from taskgate.store.db import Database
from taskgate.worker.procutil import die_with_parent
from taskgate.worker.runtime import WorkerRuntime
from taskgate.workflows.registry import Registry

log = logging.getLogger(__name__)


def run_worker(settings: Settings, slots: int, *, child_of_serve: bool = False) -> None:
    """Run ``slots`` worker slots until SIGTERM or SIGINT, then drain."""
    if child_of_serve:
        # The server's death (even by SIGKILL) stops this worker with a drain.
        die_with_parent(signal.SIGTERM)
    logs.configure(settings.log_level, settings.log_format)
    try:
        require_secret_key(settings)
    except MissingSecretKey as exc:
        raise SystemExit(str(exc)) from None
    db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    try:
        if not schema_is_current(db):
            if not db.is_sqlite:
                raise SystemExit("The database schema is out of date: run `taskgate migrate`.")
            migrate.upgrade(db)
        registry = Registry.load(settings.workflows)
        runtime = WorkerRuntime(settings, db, registry, slots=slots)
        asyncio.run(_run(runtime))
    finally:
        db.close()


async def _run(runtime: WorkerRuntime) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    await runtime.run()
