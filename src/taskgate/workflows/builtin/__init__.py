"""The workflows taskgate ships."""

from taskgate.workflows.builtin.wait import wait

__all__ = ["wait"]
