"""Submission payloads and the wait workflow's input."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskgate.payloads import TaskSubmit, WorkflowSubmit
from taskgate.workflows.builtin.wait import WaitInput, wait
from taskgate.workflows.registry import Registry


def test_metadata_limits() -> None:
    ok = {f"k{i}": "v" * 500 for i in range(50)}
    assert TaskSubmit(workflow="wait", metadata=ok).metadata == ok
    for bad in (
        {f"k{i}": "v" for i in range(51)},
        {"k" * 41: "v"},
        {"k": "v" * 501},
        {"": "v"},
    ):
        with pytest.raises(ValidationError):
            TaskSubmit(workflow="wait", metadata=bad)


def test_metadata_values_are_strings() -> None:
    with pytest.raises(ValidationError):
        TaskSubmit.model_validate({"workflow": "wait", "metadata": {"k": {"nested": 1}}})


def test_priority_bounds_and_unknown_fields() -> None:
    assert WorkflowSubmit(priority=10).priority == 10
    for bad in (11, -11):
        with pytest.raises(ValidationError):
            WorkflowSubmit(priority=bad)
    with pytest.raises(ValidationError):
        WorkflowSubmit.model_validate({"workflow": "wait"})


def test_wait_input_defaults_and_bounds() -> None:
    value = WaitInput()
    assert (value.seconds, value.steps, value.fail, value.fail_attempts) == (0, 1, False, 0)
    assert value.credits == "0"
    assert WaitInput(seconds=0.25).seconds == 0.25
    for bad in (
        {"seconds": -1},
        {"seconds": 3601},
        {"steps": 0},
        {"steps": 1001},
        {"output_bytes": 100 * 1024 * 1024 + 1},
        {"credits": "abc"},
        {"credits": "-1"},
        {"credits": "0.0001"},
        {"retryable": True},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            WaitInput.model_validate(bad)
    assert WaitInput(fail=True, retryable=True).retryable


def test_wait_estimate_is_its_price_and_duration() -> None:
    estimate = wait.estimate_for(WaitInput(seconds=3, credits="1.25"))
    assert str(estimate.credits) == "1.25"
    assert estimate.seconds == 3


def test_registry_loads_builtins_and_modules() -> None:
    registry = Registry.load(["taskgate_testflows"])
    assert {"wait", "spin", "probe"} <= set(registry.names())
    assert registry.queues() == ["default"]
    with pytest.raises(ValueError, match="two workflows"):
        registry.add(
            type(wait)(
                **{**{f: getattr(wait, f) for f in wait.__dataclass_fields__}, "handler": print}
            )
        )
