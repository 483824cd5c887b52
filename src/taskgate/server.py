"""``taskgate serve``: the API and, in its process tree, the worker slots."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any

import uvicorn

from taskgate import logs
from taskgate.api.app import create_app
from taskgate.composition import Services, build
from taskgate.services.ops import schema_is_current
from taskgate.services.signing import MissingSecretKey, require_secret_key
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
    api_processes: int = 1,
    access_log: bool = True,
    announce: Any = print,
) -> None:
    """Migrate (SQLite), create the default account on first start (SQLite: with
    PostgreSQL accounts come from the CLI or the admin API), start the worker child
    and any further API processes, and serve HTTP until SIGTERM or SIGINT; then stop
    the other API processes and drain the worker.

    With ``api_processes`` > 1 every API process listens on the same port
    (``SO_REUSEPORT``: the kernel spreads the connections), each with its own event
    loop, event hub and webhook deliverer.
    """
    logs.configure(settings.log_level, settings.log_format)
    try:
        require_secret_key(settings)
    except MissingSecretKey as exc:
        raise SystemExit(str(exc)) from None
    # Started first, so that it is forked before this process opens a connection
    # or starts a thread; it waits for the schema.
    worker = WorkerChild.start(settings, workers) if workers > 0 else None
    try:
        services = build(settings)
        try:
            if services.db.is_sqlite:
                migrate.upgrade(services.db)
                key = services.accounts.ensure_default(settings.initial_credits)
                if key is not None:
                    announce(
                        "Created the account 'default'. "
                        f"Its API key (shown only this once):\n  {key}\n"
                    )
            elif not schema_is_current(services.db):
                raise SystemExit("The database schema is out of date: run `taskgate migrate`.")
            if worker is not None:
                worker.release()
            _serve(services, settings, host, port, api_processes, access_log, announce)
        finally:
            services.close()
    finally:
        if worker is not None:
            worker.stop(settings.drain_seconds + settings.cancel_grace_seconds + 10)


def _serve(
    services: Services,
    settings: Settings,
    host: str,
    port: int,
    api_processes: int,
    access_log: bool,
    announce: Any,
) -> None:
    """Start any further API processes and serve HTTP until SIGTERM or SIGINT; then
    stop the other API processes."""
    base_url = settings.public_url or f"http://{_url_host(host)}:{port}"
    shared = api_processes > 1
    others = [
        _start_api(settings, host, port, base_url, access_log) for _ in range(api_processes - 1)
    ]
    # Uvicorn re-raises the signal that stopped it once it has shut down; a
    # handler of ours keeps that from ending the process before the drain.
    stop_signals: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
    announce(f"taskgate listening on {base_url} (data dir {settings.data_dir})")
    try:
        _serve_http(services, settings, host, port, base_url, access_log, shared=shared)
    finally:
        for process in others:
            _stop(process, settings.drain_seconds + 10)


def run_api(settings: Settings, host: str, port: int, base_url: str, access_log: bool) -> None:
    """An API process beside the one ``serve`` runs (same port, own event loop)."""
    logs.configure(settings.log_level, settings.log_format)
    services = build(settings)
    try:
        _serve_http(services, settings, host, port, base_url, access_log, shared=True)
    finally:
        services.close()


def _serve_http(
    services: Services,
    settings: Settings,
    host: str,
    port: int,
    base_url: str,
    access_log: bool,
    *,
    shared: bool,
) -> None:
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
    # Objects made at start-up live as long as the process: keep the collector
    # from walking them again and again, and let it run less often under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # Server.run picks the event loop the config asks for (uvloop when installed).
    server.run(sockets=[_shared_socket(host, port)] if shared else None)


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _start_api(
    settings: Settings, host: str, port: int, base_url: str, access_log: bool
) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=run_api,
        args=(settings, host, port, base_url, access_log),
        name="taskgate-api",
    )
    process.start()
    return process


def _stop(process: multiprocessing.process.BaseProcess, timeout: float) -> None:
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
    process.join(timeout=timeout)
    if process.is_alive():
        log.warning("%s did not stop in time; killing it", process.name)
        process.kill()
        process.join()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


class WorkerChild:
    """The worker slots of ``serve``, in a child process.

    On Linux the child is forked before the server opens a connection or starts a
    thread, so that the modules both need are imported once: a spawned child spent
    1.0–1.2 s of CPU starting, a forked one spends about 0.2. Elsewhere it is
    spawned.
    Either way it waits until :meth:`release` (the server has migrated the
    schema), and ends without running anything if the server ends first.
    """

    def __init__(self, process: multiprocessing.process.BaseProcess, gate: Connection) -> None:
        self._process = process
        self._gate = gate

    @classmethod
    def start(cls, settings: Settings, slots: int) -> WorkerChild:
        context = (
            multiprocessing.get_context("fork")
            if sys.platform == "linux"
            else multiprocessing.get_context("spawn")
        )
        waiting, gate = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_child, args=(settings, slots, waiting, gate), name="taskgate-worker"
        )
        process.start()
        waiting.close()
        return cls(process, gate)

    def release(self) -> None:
        self._gate.send(True)

    def stop(self, timeout: float) -> None:
        self._gate.close()
        _stop(self._process, timeout)


def _worker_child(settings: Settings, slots: int, waiting: Connection, gate: Connection) -> None:
    # The server's end, inherited by a fork (or passed to a spawned child): closed
    # here, so that the server's exit is an end of file.
    gate.close()
    try:
        waiting.recv()
    except EOFError:
        return
    finally:
        waiting.close()
    run_worker(settings, slots, child_of_serve=True)
