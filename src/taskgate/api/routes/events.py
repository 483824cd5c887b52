"""Server-sent events: ``GET /v1/tasks/{id}/events`` and ``GET /v1/events``.

A task's stream starts with a ``task.snapshot`` (its ``id:`` is the sequence number
of the latest event it reflects), then sends each later change (``event:`` its
type, ``id:`` the task's sequence number) and closes after the terminal event.
``Last-Event-ID`` (or ``?last_event_id=``) resumes: no snapshot, exactly the events
after it, and a 204 when the task ended with that event. The account's stream sends
every event of the account (``id:`` the ``evt_`` id) and never ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Send

from taskgate.api.deps import Caller, ReaderDep, read_caller
from taskgate.api.middleware import RAW_SEND
from taskgate.api.presenters import event_object, snapshot_object
from taskgate.api.responses import ERROR_RESPONSES
from taskgate.core.aio import start_eagerly
from taskgate.core.clock import now_us
from taskgate.core.errors import InvalidParam
from taskgate.core.models import Event
from taskgate.services.events import TaskStart
from taskgate.services.signing import Signer
from taskgate.services.tasks import TaskView

router = APIRouter(prefix="/v1", tags=["events"], responses=ERROR_RESPONSES)

_DIGITS = re.compile(r"[0-9]{1,18}")
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "An event stream"}
}


def _last_event_id(request: Request, query: str | None) -> str | None:
    value = request.headers.get("last-event-id", query)
    return value.strip() if value is not None and value.strip() else None


def _data(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


class _EncodedEvents:
    """Each event's SSE bytes, made once for all the streams that send it (an event
    of an account with many open streams is sent many times)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._cache: OrderedDict[tuple[str, str, bool], bytes] = OrderedDict()
        # The same run of events goes to every stream of the account.
        self._runs: OrderedDict[tuple[tuple[str, ...], str, bool], bytes] = OrderedDict()
        self._last: tuple[list[Event], str, bool, bytes] | None = None

    def run(self, events: list[Event], base_url: str, signer: Signer, *, by_seq: bool) -> bytes:
        """The SSE bytes of consecutive events, as one write."""
        last = self._last
        if last is not None and last[0] is events and last[1] == base_url and last[2] == by_seq:
            return last[3]  # the hub hands every stream of an account the same list
        if len(events) == 1:
            encoded = self.get(events[0], base_url, signer, by_seq=by_seq)
        else:
            key = (tuple(event.id for event in events), base_url, by_seq)
            found = self._runs.get(key)
            if found is None:
                found = b"".join(self.get(e, base_url, signer, by_seq=by_seq) for e in events)
                self._runs[key] = found
                if len(self._runs) > self._size:
                    self._runs.popitem(last=False)
            encoded = found
        # (holding the list keeps its id from being reused by another)
        self._last = (events, base_url, by_seq, encoded)
        return encoded

    def get(self, event: Event, base_url: str, signer: Signer, *, by_seq: bool) -> bytes:
        key = (event.id, base_url, by_seq)
        encoded = self._cache.get(key)
        if encoded is None:
            encoded = ServerSentEvent(
                _data(event_object(event, base_url, signer)),
                event=event.type,
                # A task's stream numbers its events; the account's uses evt_ ids.
                id=str(event.seq) if by_seq else event.id,
            ).encode()
            self._cache[key] = encoded
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return encoded


_ENCODED = _EncodedEvents()


class EventStream(EventSourceResponse):
    """sse-starlette's response, with a cheaper path for body chunks: an account's
    event goes to each of its open streams, thousands of sends in a row on one
    event loop.

    - No send timeout is set, so a chunk is sent without the per-send cancel scope
      (a client that is gone is noticed by the disconnect listener).
    - Chunks go to the server's own ``send`` that the edge middleware left in the
      scope: the wrappers in between only watch the response's start, which still
      passes through them.
    """

    def __init__(self, raw_send: Send | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw_send = raw_send

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is not None:
            await super()._send_with_timeout(send, message)
        elif self._raw_send is not None and message["type"] == "http.response.body":
            await self._raw_send(message)
        else:
            await send(message)


class _DirectWrites:
    """An account stream's sink (see ``Subscription``): writes the events the hub
    hands over through the server's ``send``, started in the hub's step.

    Such a write completes at once while the socket's buffer has room. One that
    must wait for a slow reader finishes in a task, and until it has, the sink
    refuses more: the stream's own loop then takes them, after that write.
    """

    def __init__(self, send: Send, base_url: str, signer: Signer) -> None:
        self._send = send
        self._base_url = base_url
        self._signer = signer
        self._pending: asyncio.Future[None] | None = None

    def __call__(self, events: list[Event]) -> bool:
        if self._pending is not None:
            if not self._pending.done():
                return False
            if not self._settled():
                return False  # the stream's loop sees the failure and ends the stream
        body = _ENCODED.run(events, self._base_url, self._signer, by_seq=False)
        try:
            self._pending = start_eagerly(
                self._send({"type": "http.response.body", "body": body, "more_body": True})
            )
        except Exception as exc:
            self._pending = asyncio.get_running_loop().create_future()
            self._pending.set_exception(exc)
            return False
        return True

    def _settled(self) -> bool:
        """Whether the last write succeeded (it is done)."""
        assert self._pending is not None
        if self._pending.cancelled() or self._pending.exception() is not None:
            return False
        self._pending = None
        return True

    async def idle(self) -> bool:
        """Wait for the last write; whether the stream can go on."""
        if self._pending is None:
            return True
        with contextlib.suppress(Exception):
            await asyncio.shield(self._pending)
        return self._settled()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


def _stream(request: Request, events: AsyncIterator[ServerSentEvent | bytes]) -> EventStream:
    keepalive = request.app.state.services.settings.sse_keepalive_seconds
    return EventStream(
        request.scope.get(RAW_SEND),
        events,
        ping=keepalive,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/tasks/{task_id}/events",
    operation_id="stream_task_events",
    response_class=EventSourceResponse,
    responses=_STREAM,
)
async def stream_task_events(
    task_id: str,
    request: Request,
    token: Annotated[
        str | None, Query(description="A stream token from the task's links.events")
    ] = None,
    last_event_id: Annotated[
        str | None, Query(description="Resume after this event (or the Last-Event-ID header)")
    ] = None,
) -> Response:
    """A task's changes as server-sent events. Authenticated by the API key, or by
    the signed ``token`` of ``links.events`` (for EventSource in browsers)."""
    services = request.app.state.services
    if token is not None:
        account_id = services.signer.open_stream_token(token, task_id)
        caller: Caller | None = None
    else:
        caller = await read_caller(request)
        account_id = caller.account_id
    resume = _last_event_id(request, last_event_id)
    after_seq: int | None = None
    if resume is not None:
        if not _DIGITS.fullmatch(resume):
            raise InvalidParam(
                "A task's event ids are sequence numbers (0, 1, 2…).", param="last_event_id"
            )
        after_seq = int(resume)
    base_url = request.app.state.base_url
    hub = services.events
    # The subscription stays open for the response's lifetime (the stream closes
    # it); opening it here turns a 404 or 400 into a normal response.
    opened = AsyncExitStack()
    start, events = await opened.enter_async_context(
        hub.task_events(account_id, task_id, after_seq)
    )
    if after_seq is not None and start.task.terminal and not start.backlog:
        await opened.aclose()
        response = Response(status_code=204)
    else:
        response = _stream(
            request, _task_stream(opened, start, events, base_url, services.signer, after_seq)
        )
    return caller.with_limit_headers(response) if caller is not None else response


async def _task_stream(
    opened: AsyncExitStack,
    start: TaskStart,
    events: AsyncIterator[list[Event]],
    base_url: str,
    signer: Signer,
    after_seq: int | None,
) -> AsyncIterator[ServerSentEvent | bytes]:
    try:
        if after_seq is None:
            now = now_us()
            yield ServerSentEvent(
                _data(snapshot_object(TaskView(start.task), base_url, now, signer)),
                event="task.snapshot",
                id=str(start.task.event_seq),
            )
        async for batch in events:
            # One write for all the events that were waiting.
            yield _ENCODED.run(batch, base_url, signer, by_seq=True)
    finally:
        await opened.aclose()


@router.get(
    "/events",
    operation_id="stream_account_events",
    response_class=EventSourceResponse,
    responses=_STREAM,
)
async def stream_account_events(
    request: Request,
    caller: ReaderDep,
    last_event_id: Annotated[
        str | None, Query(description="Resume after this evt_ id (or the Last-Event-ID header)")
    ] = None,
) -> Response:
    """Every change of every task of the account, as server-sent events."""
    resume = _last_event_id(request, last_event_id)
    if resume is not None and not resume.startswith("evt_"):
        raise InvalidParam("The account's event ids are evt_ ids.", param="last_event_id")
    signer = caller.services.signer
    raw_send = request.scope.get(RAW_SEND)
    writes = None if raw_send is None else _DirectWrites(raw_send, caller.base_url, signer)
    opened = AsyncExitStack()
    events = await opened.enter_async_context(
        caller.services.events.account_events(caller.account_id, resume, writes)
    )
    return caller.with_limit_headers(
        _stream(request, _account_stream(opened, events, writes, caller.base_url, signer))
    )


async def _account_stream(
    opened: AsyncExitStack,
    events: AsyncIterator[list[Event]],
    writes: _DirectWrites | None,
    base_url: str,
    signer: Signer,
) -> AsyncIterator[ServerSentEvent | bytes]:
    try:
        async for batch in events:
            # What the hub wrote directly goes first.
            if writes is not None and not await writes.idle():
                return
            yield _ENCODED.run(batch, base_url, signer, by_seq=False)
    finally:
        await opened.aclose()
        if writes is not None:
            writes.close()
