"""``taskgate serve --api-processes 2``: two API processes on one port, each with its
own event loop, event hub and webhook deliverer, behave as one server: every stream
gets every event, and each webhook event is delivered once."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.acceptance.apitools import json_of, quick_account, submit, wait_status
from tests.acceptance.receiver import receiving
from tests.acceptance.test_api_events import open_stream
from tests.helpers import start_server, wait_until


def listening_sockets(port: int) -> int:
    """Sockets in LISTEN state on ``port`` (``/proc/net/tcp``, ``tcp6``)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, state = fields[1], fields[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def test_two_api_processes_serve_one_port(data_dir: Path) -> None:
    env = {"TASKGATE_ALLOW_PRIVATE_URLS": "true", "TASKGATE_WEBHOOK_RETRY_SCHEDULE": "0.1"}
    srv = start_server(data_dir, "--api-processes", "2", env=env)
    port = int(srv.base_url.rsplit(":", 1)[1])
    try:
        wait_until(lambda: listening_sockets(port) == 2, message="two listening processes")
        account = quick_account(srv.data_dir, "procs")
        with receiving() as receiver, srv.client(account.key) as http:
            json_of(
                http.post(
                    "/v1/webhooks",
                    json={"url": receiver.url(), "enabled_events": ["task.completed"]},
                ),
                201,
            )
            task = submit(http, input={"seconds": 1, "steps": 2})
            # Streams on fresh connections, spread over both processes by the kernel.
            finals: list[str] = []

            def follow() -> None:
                with (
                    httpx.Client(
                        base_url=srv.base_url,
                        headers={"Authorization": f"Bearer {account.key}"},
                    ) as own,
                    open_stream(own, f"/v1/tasks/{task['id']}/events") as stream,
                ):
                    events = stream.until(lambda e: e.event == "task.completed")
                    finals.append(str(events[-1].event))

            readers = [threading.Thread(target=follow) for _ in range(8)]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(30)
            wait_status(http, task["id"], {"completed"})
            more = [submit(http, input={"seconds": 0}) for _ in range(4)]
            for other in more:
                wait_status(http, other["id"], {"completed"})
            accepted = receiver.wait_accepted(5)
            everything = receiver.snapshot()
        assert finals == ["task.completed"] * 8
        # Both deliverers follow the outbox; each event still goes out once.
        ids = [r.webhook_id for r in everything]
        assert len(ids) == len(set(ids)) == 5
        assert {r.event["data"]["id"] for r in accepted} == {t["id"] for t in [task, *more]}
    finally:
        assert srv.stop() == 0
    assert listening_sockets(port) == 0
