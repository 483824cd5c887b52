"""The workflows taskgate ships."""

from taskgate.workflows.builtin.ecommerce_video import ecommerce_video
from taskgate.workflows.builtin.music import music
from taskgate.workflows.builtin.music_video import music_video
from taskgate.workflows.builtin.slideshow import slideshow
from taskgate.workflows.builtin.wait import wait

__all__ = ["ecommerce_video", "music", "music_video", "slideshow", "wait"]
