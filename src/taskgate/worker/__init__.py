"""The worker runtime: slots that claim tasks and run handlers in executor processes."""
