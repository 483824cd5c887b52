"""A new user's first session: start the server, submit, poll, cancel."""

from __future__ import annotations

from typing import Any

from tests.helpers import ServerProcess, wait_until


def test_submit_poll_complete(server: ServerProcess) -> None:
    assert server.api_key is not None and server.api_key.startswith("tg_live_")
    with server.client() as http:
        created = http.post("/v1/tasks", json={"workflow": "wait", "input": {"seconds": 0.2}})
        assert created.status_code == 201, created.text
        task = created.json()
        assert task["status"] == "queued"
        assert created.headers["x-request-id"]

        def done() -> dict[str, Any] | None:
            body = http.get(f"/v1/tasks/{task['id']}").json()
            return body if body["status"] == "completed" else None

        final = wait_until(done, timeout=15, message="the task to complete")
        assert final["progress"]["percent"] == 100
        assert final["output"] == [{"waited_seconds": 0.2, "steps": 1}]
