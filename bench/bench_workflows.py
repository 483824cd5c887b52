"""Workflows for the benchmark, loaded with ``TASKGATE_WORKFLOWS=bench_workflows``."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict

import peer_stamps
from taskgate.workflows.sdk import Context, Estimate, workflow


class StampInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


@workflow("bench_stamp", input=StampInput, estimate=lambda _value: Estimate(seconds=0.0))
def stamp(ctx: Context[StampInput]) -> dict[str, float]:
    """Returns the wall-clock time at which the handler ran (dispatch latency), and
    sends it to the bench first where it listens (``BENCH_STAMP_PORT``), as the
    peers' handlers do."""
    now = time.time()
    if os.environ.get(peer_stamps.PORT_ENV):
        peer_stamps.send_stamp(now)
    return {"t": now}
