"""The SDK ships on its own: importing it loads none of the server."""

from __future__ import annotations

import json
import subprocess
import sys

import taskgate.client

SERVER_MODULES = ("fastapi", "sqlalchemy", "uvicorn", "av", "sse_starlette", "starlette")


def test_importing_the_client_loads_no_server_module() -> None:
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, taskgate.client; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules: list[str] = json.loads(found.stdout)
    assert [m for m in modules if m.split(".")[0] in SERVER_MODULES] == []
    ours = [m for m in modules if m.split(".")[0] == "taskgate"]
    allowed = ("taskgate", "taskgate.payloads")
    assert [m for m in ours if m not in allowed and m.split(".")[1] != "client"] == []
    assert "taskgate.client" in ours
    assert "taskgate.payloads" in ours


def test_public_names() -> None:
    assert sorted(taskgate.client.__all__) == [
        "APIConnectionError",
        "APIError",
        "AsyncClient",
        "AsyncDriver",
        "AuthenticationError",
        "Client",
        "Config",
        "ConflictError",
        "DeletedObject",
        "DeliveryObject",
        "FileObject",
        "FileUrlObject",
        "Files",
        "IdempotencyConflictError",
        "InsufficientCreditsError",
        "InvalidRequestError",
        "NOT_GIVEN",
        "NotFoundError",
        "RateLimitError",
        "ServerError",
        "SyncDriver",
        "TaskCancelledError",
        "TaskEvent",
        "TaskFailedError",
        "TaskObject",
        "TaskRun",
        "TaskgateError",
        "Tasks",
        "Usage",
        "UsageObject",
        "WaitTimeoutError",
        "WebhookEvent",
        "WebhookObject",
        "WebhookVerificationError",
        "Webhooks",
        "WorkflowObject",
        "Workflows",
        "verify_webhook",
    ]
    for name in taskgate.client.__all__:
        value = getattr(taskgate.client, name)
        # The payload models are not ours; NOT_GIVEN is a value.
        if name != "NOT_GIVEN" and value.__module__.startswith("taskgate.client"):
            assert value.__doc__, name
