"""``taskgate serve``: the API and, in its process tree, the worker slots."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
from typing import Any

import uvicorn

from taskgate import logs
from taskgate.api.app import create_app
from taskgate.composition import build
from taskgate.settings import Settings
from taskgate.store import migrate
from taskgate.worker.main import run_worker

log = logging.getLogger(__name__)


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    access_log: bool = True,
    announce: Any = print,
) -> None:
    """Migrate (SQLite), create the default account on first start, start the worker
    child, and serve HTTP until SIGTERM or SIGINT; then drain the worker."""
    logs.configure(settings.log_level, settings.log_format)
    services = build(settings)
    try:
        if services.db.is_sqlite:
            migrate.upgrade(services.db)
        elif not migrate.is_up_to_date(services.db):
            raise SystemExit("The database schema is out of date: run `taskgate migrate`.")
        key = services.accounts.ensure_default(settings.initial_credits)
        if key is not None:
            announce(
                f"Created the account 'default'. Its API key (shown only this once):\n  {key}\n"
            )
        base_url = settings.public_url or f"http://{_url_host(host)}:{port}"
        worker = _start_worker(settings, workers) if workers > 0 else None
        app = create_app(services, base_url=base_url, access_log=access_log)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(1, int(settings.drain_seconds)),
        )
        server = uvicorn.Server(config)
        announce(f"taskgate listening on {base_url} (data dir {settings.data_dir})")
        # Uvicorn re-raises the signal that stopped it once it has shut down; a
        # handler of ours keeps that from ending the process before the drain.
        stop_signals: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
        # Objects made at start-up live as long as the process: keep the collector
        # from walking them again and again, and let it run less often under load.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            # Server.run picks the event loop the config asks for (uvloop when installed).
            server.run()
        finally:
            if worker is not None:
                _stop_worker(worker, settings)
    finally:
        services.close()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _start_worker(settings: Settings, slots: int) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=run_worker,
        args=(settings, slots),
        kwargs={"child_of_serve": True},
        name="taskgate-worker",
    )
    process.start()
    return process


def _stop_worker(process: multiprocessing.process.BaseProcess, settings: Settings) -> None:
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
    process.join(timeout=settings.drain_seconds + settings.cancel_grace_seconds + 10)
    if process.is_alive():
        log.warning("worker did not stop in time; killing it")
        process.kill()
        process.join()
