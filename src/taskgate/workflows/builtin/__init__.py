"""The workflows taskgate ships."""

from taskgate.workflows.builtin.music import music
from taskgate.workflows.builtin.wait import wait

__all__ = ["music", "wait"]
