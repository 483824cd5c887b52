"""The PostgreSQL channel on a real server: a message published by one process's
channel reaches the listeners of its role in another, and a listener whose
connection is terminated reconnects, tells its listeners to look at everything,
and receives again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from taskgate.services.channel import API, WORKER
from taskgate.services.pgchannel import WAKE_ALL, PgChannel
from taskgate.store.postgres import normalise_url
from tests.databases import PostgresServer

#: How long a notification may take here (a poll interval is far longer in production).
PROMPT = 5.0


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create()
    try:
        yield url
    finally:
        postgres_server.drop(url)


class Inbox:
    """Messages a listener received, awaited with a deadline."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def __call__(self, message: bytes) -> None:
        self.queue.put_nowait(message)

    async def expect(self, wanted: bytes) -> None:
        """Wait for ``wanted`` (skipping anything else, such as wake-alls)."""
        async with asyncio.timeout(PROMPT):
            while await self.queue.get() != wanted:
                pass


def test_a_message_reaches_the_listeners_of_its_role_only(pg_url: str) -> None:
    sender = PgChannel(pg_url)
    receiver = PgChannel(pg_url)

    async def scenario() -> None:
        workers, apis = Inbox(), Inbox()
        worker_sub = receiver.listen(WORKER, "w1", workers)
        api_sub = receiver.listen(API, "a1", apis)
        # Once listening, the channel tells its listeners to look at everything.
        await workers.expect(WAKE_ALL[WORKER])
        await apis.expect(WAKE_ALL[API])
        sender.publish(WORKER, b"ctask_one")
        await workers.expect(b"ctask_one")
        sender.publish(API, b"e")
        await apis.expect(b"e")
        assert workers.queue.empty(), "an api message reached a worker listener"
        worker_sub.close()
        api_sub.close()

    try:
        asyncio.run(scenario())
    finally:
        sender.close()
        receiver.close()


def test_a_terminated_connection_is_replaced(pg_url: str) -> None:
    sender = PgChannel(pg_url, max_backoff=0.2)
    receiver = PgChannel(pg_url, max_backoff=0.2)
    admin = create_engine(normalise_url(pg_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def terminate_all() -> int:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND application_name = 'taskgate-wakeups'"
                    )
                ).all()
            )

    async def scenario() -> None:
        inbox = Inbox()
        sub = receiver.listen(WORKER, "w1", inbox)
        await inbox.expect(WAKE_ALL[WORKER])
        sender.publish(WORKER, b"ctask_before")
        await inbox.expect(b"ctask_before")
        # The listener's (and the sender's) backends end, as in a database restart.
        assert terminate_all() == 2
        # Reconnected: a wake-all, since anything sent meanwhile was lost …
        await inbox.expect(WAKE_ALL[WORKER])
        # … and messages flow again, through the sender's new connection too.
        sender.publish(WORKER, b"ctask_after")
        await inbox.expect(b"ctask_after")
        sub.close()

    try:
        asyncio.run(scenario())
    finally:
        sender.close()
        receiver.close()
        admin.dispose()


def test_close_without_use_and_publish_after_close(pg_url: str) -> None:
    unused = PgChannel(pg_url)
    unused.close()
    closed = PgChannel(pg_url)
    closed.publish(API, b"e")
    closed.close()
    closed.publish(API, b"e")  # dropped: no thread, no error
    closed.close()
