"""Workflows: the public SDK (``taskgate.workflows.sdk``) and the registry that loads them."""
