"""The procrastinate side of ``bench/peers.py``:
``procrastinate --app=peer_procrastinate.app worker``.

Database: ``BENCH_PROCRASTINATE_DSN`` (a PostgreSQL database of its own, with
procrastinate's schema applied). The tasks are coroutines, as procrastinate
recommends: they run on the worker's event loop, not in a thread.
"""

from __future__ import annotations

import atexit
import os
import time

import procrastinate

import peer_stamps

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN", "")
    ),
)


async def _noop() -> None:
    peer_stamps.count_start()
    peer_stamps.count_end()


async def _stamp() -> None:
    peer_stamps.send_stamp(time.time())


noop = app.task(name="noop")(_noop)
stamp = app.task(name="stamp")(_stamp)


atexit.register(peer_stamps.write_counts)
