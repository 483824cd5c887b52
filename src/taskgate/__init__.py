"""taskgate: a self-hosted asynchronous task API for generative media."""

__version__ = "0.1.0"
