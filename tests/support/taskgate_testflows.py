"""Workflows used only by the test suite (loaded with TASKGATE_WORKFLOWS=taskgate_testflows).

Each records what it needs for a test to check real behaviour: the probe records
when its handler ran; the concurrency recorder writes its own entry and exit times
to a file.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from taskgate.workflows.sdk import (
    Context,
    Estimate,
    FileRef,
    Rate,
    Rates,
    WorkflowError,
    workflow,
)


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpinInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=1.0, ge=0, le=600)


@workflow("spin", input=SpinInput, estimate=lambda i: Estimate(seconds=i.seconds))
def spin(ctx: Context[SpinInput]) -> dict[str, float]:
    """Keeps a CPU busy (pure Python, holding its process's GIL) until done or cancelled."""
    end = time.monotonic() + ctx.input.seconds
    n = 0
    while time.monotonic() < end:
        for _ in range(10_000):
            n += 1
        if ctx.cancelled:
            break
    return {"iterations": float(n)}


class StubbornInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=60.0, ge=0, le=600)


@workflow(
    "stubborn",
    input=StubbornInput,
    estimate=lambda i: Estimate(seconds=i.seconds),
    timeout=600,
)
def stubborn(ctx: Context[StubbornInput]) -> dict[str, str]:
    """Ignores cancellation and sleeps through it (it is killed after the grace period)."""
    time.sleep(ctx.input.seconds)
    return {"finished": "yes"}


@workflow("boom", input=Empty, max_attempts=3)
def boom(ctx: Context[Empty]) -> None:
    """Raises an unexpected exception."""
    raise RuntimeError("kaboom")


class SlowInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=5.0, ge=0, le=600)


@workflow("slow", input=SlowInput, timeout=0.5)
def slow(ctx: Context[SlowInput]) -> None:
    """Sleeps past its 0.5 s timeout."""
    time.sleep(ctx.input.seconds)


class ProbeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=0.0, ge=0, le=600)
    record_dir: str | None = None


@workflow("probe", input=ProbeInput, estimate=lambda i: Estimate(seconds=i.seconds))
def probe(ctx: Context[ProbeInput]) -> dict[str, float | int | str]:
    """Records when the handler started and ended (wall clock), and its process id;
    with ``record_dir`` also in a file named after the task."""
    entered = time.time()
    deadline = time.monotonic() + ctx.input.seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    left = time.time()
    if ctx.input.record_dir:
        path = Path(ctx.input.record_dir) / f"{ctx.task_id}-{ctx.attempt}"
        path.write_text(f"{entered} {left} {os.getpid()}")
    return {"entered": entered, "left": left, "pid": os.getpid(), "attempt": ctx.attempt}


class MeteredInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: float = Field(default=1.0, ge=0, le=1_000_000)
    #: Reserve for this many units instead (to under- or over-estimate).
    estimate_units: float | None = Field(default=None, ge=0, le=1_000_000)
    seconds: float = Field(default=0.0, ge=0, le=600)
    fail: bool = False


_UNIT_PRICE = Decimal("0.5")


@workflow(
    "metered",
    input=MeteredInput,
    estimate=lambda i: Estimate(
        credits=_UNIT_PRICE
        * Decimal(str(i.units if i.estimate_units is None else i.estimate_units)),
        seconds=i.seconds,
    ),
    price=Rates(units=Rate("unit", _UNIT_PRICE)),
)
def metered(ctx: Context[MeteredInput]) -> dict[str, float]:
    """Reports ``units`` of usage (0.5 credits each), after ``seconds``; fails on request
    (having used them)."""
    deadline = time.monotonic() + ctx.input.seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    ctx.usage(units=ctx.input.units)
    if ctx.input.fail:
        raise WorkflowError("Failed as asked.", code="metered_failed")
    return {"units": ctx.input.units}


class CopyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: FileRef
    extra: list[FileRef] = Field(default_factory=list)
    hold_seconds: float = Field(default=0, ge=0, le=60)


@workflow("copy-files", input=CopyInput, estimate=lambda i: Estimate(seconds=1))
def copy_files(ctx: Context[CopyInput]) -> dict[str, int]:
    """Writes each input file back as an output (byte for byte), after holding for
    ``hold_seconds`` (cancellable)."""
    end = time.monotonic() + ctx.input.hold_seconds
    while time.monotonic() < end and not ctx.cancelled:
        time.sleep(0.01)
    refs = [ctx.input.source, *ctx.input.extra]
    for index, ref in enumerate(refs):
        data = ctx.file(ref).read_bytes()
        ctx.output_file(f"copy-{index}.bin").write_bytes(data)
    return {"copied": len(refs)}
