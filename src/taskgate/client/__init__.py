"""The taskgate Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

::

    from taskgate.client import Client

    with Client() as client:              # TASKGATE_BASE_URL, TASKGATE_API_KEY
        task = client.tasks.create("wait", {"seconds": 1})
        done = client.tasks.wait(task.id, timeout=60)

It imports only itself, ``taskgate.payloads`` (the wire models it returns), httpx,
pydantic and standardwebhooks, so it can ship on its own.

Design: one source for two clients
----------------------------------
Every operation is written once, as a *plan*: a generator that yields effects —
``Call`` (send a request, get the whole reply), ``OpenStream``/``ReadLine``/
``CloseStream`` (an event stream), ``Sleep``, ``Emit`` (a value for an iterator) —
and receives their results; a network failure is thrown into it at the ``yield``
as :class:`APIConnectionError`. Retries, idempotency keys, paging, SSE parsing and
resuming, and the stream-then-poll wait are therefore plain sequential code with no
I/O of its own (``_plans``, ``_waiting``). Two small drivers (``_drivers``) perform
effects, one with ``httpx.Client`` and time.sleep, one with ``httpx.AsyncClient``
and asyncio.sleep; they are the only code that exists per I/O mode, and they know
nothing of the API.

The surface is declared once too (``_surface``): resource classes generic in the
driver, whose methods are descriptors around plans. On a :class:`Client` a method
runs its plan to a value, on an :class:`AsyncClient` it returns a coroutine (and
``tasks.list``/``tasks.stream`` an async iterator); overloads on the descriptors
give type checkers each signature. Other designs were weighed: generating the sync
code from the async (unasync) needs a build step and yields two copies to read;
running a loop in a thread for the sync client breaks inside running loops and
forks. Plans keep one copy and test like any generator.

Errors
------
::

    TaskgateError
    ├── APIError (status, code, message, param, details, request_id)
    │   ├── InvalidRequestError       400 / 422
    │   ├── AuthenticationError       401
    │   ├── InsufficientCreditsError  402 (.needed, .available)
    │   ├── NotFoundError             404
    │   ├── ConflictError             409
    │   │   └── IdempotencyConflictError  409 idempotency_conflict
    │   ├── RateLimitError            429 (.retry_after)
    │   └── ServerError               5xx
    ├── APIConnectionError            no answer from the server
    ├── TaskFailedError               (.task, .error)
    ├── TaskCancelledError            (.task)
    ├── WaitTimeoutError              (.task_id, .task): wait again by id to resume
    └── WebhookVerificationError      a delivery that ``verify_webhook`` rejects
"""

from __future__ import annotations

from taskgate.client._client import AsyncClient, Client
from taskgate.client._config import Config
from taskgate.client._drivers import AsyncDriver, SyncDriver
from taskgate.client._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConflictError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
    TaskgateError,
    WaitTimeoutError,
)
from taskgate.client._sse import TaskEvent
from taskgate.client._surface import Files, TaskRun, Tasks, Usage, Webhooks, Workflows
from taskgate.client._verify import WebhookEvent, WebhookVerificationError, verify_webhook
from taskgate.client._webhooks import NOT_GIVEN
from taskgate.payloads import (
    DeletedObject,
    DeliveryObject,
    FileObject,
    FileUrlObject,
    TaskObject,
    UsageObject,
    WebhookObject,
    WorkflowObject,
)

__all__ = [
    "NOT_GIVEN",
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
