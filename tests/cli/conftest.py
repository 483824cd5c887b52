"""Fixtures of the CLI tests: one real ``taskgate serve`` shared by the directory's
tests, a fresh account per test, and the ``taskgate`` command run as a user would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskgate.client import Client
from tests.acceptance.apitools import Account, quick_account
from tests.cli.runner import Cli
from tests.databases import Backend
from tests.helpers import ServerProcess, start_server


@pytest.fixture(scope="session")
def cli_server(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[ServerProcess]:
    # The webhook examples of docs/ register endpoints that the guard would refuse.
    env = {"TASKGATE_WORKERS": "4", "TASKGATE_ALLOW_PRIVATE_URLS": "true"}
    with backend.bound(tmp_path_factory.mktemp("cli") / "data") as data_dir:
        proc = start_server(data_dir, env=env)
        try:
            yield proc
        finally:
            proc.stop()


@pytest.fixture
def account(cli_server: ServerProcess) -> Account:
    """A fresh account with 100 credits and room for 4 running tasks."""
    return quick_account(cli_server.data_dir, "cli")


@pytest.fixture
def cli(cli_server: ServerProcess, account: Account, tmp_path: Path) -> Cli:
    """``taskgate`` run in a fresh directory, configured by the environment."""
    return Cli(cli_server.base_url, account.key, tmp_path)


@pytest.fixture
def sdk(cli_server: ServerProcess, account: Account) -> Iterator[Client]:
    """The SDK on the same account, to set up and check what the CLI did."""
    with Client(cli_server.base_url, account.key) as made:
        yield made
