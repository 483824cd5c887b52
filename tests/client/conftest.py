"""Fixtures of the SDK tests: one real ``taskgate serve`` shared by the directory's
tests (each test makes its own account where balances or lists matter), and clients
of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskgate.client import Client
from tests.acceptance.apitools import Account, quick_account
from tests.databases import Backend
from tests.helpers import ServerProcess, start_server


@pytest.fixture(scope="session")
def sdk_server(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[ServerProcess]:
    env = {
        "TASKGATE_WORKERS": "4",
        # Webhook tests deliver to a receiver on 127.0.0.1, and retry soon.
        "TASKGATE_ALLOW_PRIVATE_URLS": "true",
        "TASKGATE_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2",
    }
    with backend.bound(tmp_path_factory.mktemp("sdk") / "data") as data_dir:
        proc = start_server(data_dir, env=env)
        try:
            yield proc
        finally:
            proc.stop()


@pytest.fixture
def account(sdk_server: ServerProcess) -> Account:
    """A fresh account with 100 credits and room for 4 running tasks."""
    return quick_account(sdk_server.data_dir, "sdk")


@pytest.fixture
def client(sdk_server: ServerProcess, account: Account) -> Iterator[Client]:
    with Client(sdk_server.base_url, account.key) as made:
        yield made
