"""The ``taskgate`` command line."""
