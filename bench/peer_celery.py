"""The Celery side of ``bench/peers.py``: ``celery -A peer_celery worker``.

Broker: ``BENCH_CELERY_BROKER`` (a Redis database of its own). Results are
ignored, as they are for a no-op task whose caller never reads them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

import peer_stamps

app = Celery(
    "peer_celery", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/13")
)
app.conf.update(
    task_ignore_result=True,
    # Celery's optimizing guide: with many short tasks a large prefetch multiplier
    # lets a worker process far more tasks per second.
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "64")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def _noop() -> None:
    peer_stamps.count_start()
    peer_stamps.count_end()


def _stamp() -> None:
    peer_stamps.send_stamp(time.time())


def _exits(**_: Any) -> None:
    peer_stamps.write_counts()


# Registered by calls rather than decorators: Celery ships no type information.
noop = app.task(name="peer_celery.noop")(_noop)
stamp = app.task(name="peer_celery.stamp")(_stamp)
# A prefork pool process, or the worker itself with the solo pool.
worker_process_shutdown.connect(_exits)
worker_shutdown.connect(_exits)
