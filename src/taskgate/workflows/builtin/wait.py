"""``wait``: sleeps, reports progress, and fails or writes output on request.

For demos, tests and benchmarks: it exercises every path of the task engine
(progress, cancellation, retries, failures, output files, pricing) without
making media.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskgate.workflows.sdk import (
    Cancelled,
    Context,
    Estimate,
    RetryableError,
    WorkflowError,
    workflow,
)

MAX_OUTPUT_BYTES = 100 * 1024 * 1024
_CHUNK = 1024 * 1024
# How often a waiting handler looks for a cancel request.
_CANCEL_CHECK_SECONDS = 0.02


class WaitInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=0, ge=0, le=3600, description="How long to wait in total.")
    steps: int = Field(default=1, ge=1, le=1000, description="Progress updates over the wait.")
    fail: bool = Field(default=False, description="Fail after the wait.")
    retryable: bool = Field(default=False, description="With fail: the failure is retryable.")
    fail_attempts: int = Field(
        default=0, ge=0, le=100, description="Fail the first N attempts (retryably), then succeed."
    )
    output_bytes: int = Field(
        default=0, ge=0, le=MAX_OUTPUT_BYTES, description="Write an output file of this size."
    )
    credits: str = Field(default="0", description="The price, charged in full on completion.")

    @field_validator("credits")
    @classmethod
    def _credits(cls, value: str) -> str:
        try:
            amount = Decimal(value)
        except ArithmeticError as exc:
            raise ValueError("must be a decimal string such as '1.5'") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError("must be a non-negative decimal")
        if amount.as_tuple().exponent < -3:  # type: ignore[operator]
            raise ValueError("at most 3 decimal places")
        return value

    @model_validator(mode="after")
    def _retryable_needs_fail(self) -> WaitInput:
        if self.retryable and not self.fail:
            raise ValueError("retryable applies only with fail")
        return self


def _estimate(value: WaitInput) -> Estimate:
    return Estimate(credits=Decimal(value.credits), seconds=value.seconds)


@workflow(
    "wait",
    input=WaitInput,
    estimate=_estimate,
    title="Wait",
    description="Waits, reporting progress in steps; can fail, retry or write output on request.",
    timeout=3900,
    max_attempts=3,
)
def wait(ctx: Context[WaitInput]) -> dict[str, Any]:
    value = ctx.input
    if ctx.attempt <= value.fail_attempts:
        raise RetryableError(f"Attempt {ctx.attempt} failed as asked.", code="wait_failed")
    start = time.monotonic()
    for step in range(1, value.steps + 1):
        target = start + value.seconds * step / value.steps
        while (remaining := target - time.monotonic()) > 0:
            if ctx.cancelled:
                raise Cancelled
            time.sleep(min(remaining, _CANCEL_CHECK_SECONDS))
        ctx.progress(100 * step / value.steps, "waiting", f"step {step} of {value.steps}")
    if value.fail:
        raise WorkflowError("Failed as asked.", code="wait_failed", retryable=value.retryable)
    if value.output_bytes:
        path = ctx.output_file("wait.bin", "application/octet-stream")
        with path.open("wb") as out:
            left = value.output_bytes
            block = bytes(_CHUNK)
            while left:
                n = min(left, _CHUNK)
                out.write(block[:n])
                left -= n
    ctx.usage(wait_seconds=value.seconds)
    return {"waited_seconds": value.seconds, "steps": value.steps}
