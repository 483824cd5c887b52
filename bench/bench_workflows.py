"""Workflows for the benchmark, loaded with ``TASKGATE_WORKFLOWS=bench_workflows``."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict

from taskgate.workflows.sdk import Context, Estimate, workflow


class StampInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


@workflow("bench_stamp", input=StampInput, estimate=lambda _value: Estimate(seconds=0.0))
def stamp(ctx: Context[StampInput]) -> dict[str, float]:
    """Returns the wall-clock time at which the handler ran (dispatch latency)."""
    return {"t": time.time()}
