"""The deliverer: events to webhook endpoints and per-task callbacks, at least once.

It follows the outbox from a cursor kept in the database. Each event becomes one
delivery per target that wants it — every enabled endpoint of the account that
subscribes to the type, and the task's ``callback_url`` for its terminal event and
the types in ``callback_events`` — written in the transaction that moves the
cursor, so an event is fanned out once, whatever crashes. Nothing is held only in
memory: a delivery is pending in the database until an attempt succeeds or the
retry schedule runs out.

An attempt is a POST of the stored payload, signed per Standard Webhooks
(``webhook-id`` is the event id, the same on every attempt; ``webhook-timestamp``
is the attempt's time; ``webhook-signature`` carries one signature per live secret,
two for a day after a rotation). It succeeds on a 2xx. Redirects are not followed
(a 3xx fails), 410 Gone disables the endpoint, and every other answer, timeout or
connection error is retried after the next delay of the schedule (with jitter, and
no sooner than a ``Retry-After``). An endpoint that fails for
``webhook_disable_after_seconds`` is disabled. Connections go through the SSRF
guard, which checks the address actually used.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
import orjson
from standardwebhooks import Webhook

from taskgate import __version__
from taskgate.core.aio import wait_set
from taskgate.core.clock import MICROS, iso, now_us
from taskgate.core.errors import (
    DeliveryNotFound,
    InvalidParam,
    WebhookDisabled,
    WebhookNotFound,
)
from taskgate.core.ids import new_id
from taskgate.core.models import Event, WebhookEndpoint
from taskgate.core.states import EventType
from taskgate.services.backoff import Backoff
from taskgate.services.netguard import Resolver, delivery_error_code, guarded_client
from taskgate.services.tasks import MAX_PAGE
from taskgate.services.webhooks import new_secret
from taskgate.store import deliveries as repo
from taskgate.store import events as outbox
from taskgate.store import webhooks as endpoints_repo
from taskgate.store.db import Conn, Database
from taskgate.store.deliveries import CALLBACK, Attempt, Delivery, Taken

log = logging.getLogger(__name__)

#: The outbox cursor of the fan-out.
CURSOR = "deliveries"
#: Events a callback always receives.
TERMINAL_TYPES = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})
TEST_EVENT = "webhook.test"
STATUSES = ("pending", "delivered", "failed")
#: A ``Retry-After`` longer than this is taken as this.
MAX_RETRY_AFTER = 24 * 3600.0
#: Bytes of a receiver's answer read (and dropped) before the connection is reused.
MAX_ANSWER_BYTES = 64 * 1024
_FAN_OUT_BATCH = 500
# After a wake-up, how long the deliverer lets more events arrive before it
# looks: a task's events come a few milliseconds apart (created, started,
# completed), and one step for all of them reads the outbox once, not thrice.
_GATHER_SECONDS = 0.01
_JITTER = 0.1

#: Renders an event as the payload object sent (``{id, type, created_at, data}``).
Render = Callable[[Event], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is tried again: after ``schedule[n - 1]`` seconds for
    its n-th consecutive failure, ±10 % jitter, never sooner than ``Retry-After``;
    not at all once the schedule runs out."""

    schedule: tuple[float, ...]

    def delay(self, failures: int, retry_after: float | None, rng: random.Random) -> float | None:
        if failures > len(self.schedule):
            return None
        delay = self.schedule[failures - 1] * rng.uniform(1 - _JITTER, 1 + _JITTER)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header's delay: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,…`` signature per secret."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(secret).sign(msg_id, moment, body) for secret in secrets)


def endpoint_secrets(endpoint: WebhookEndpoint, now: int) -> list[str]:
    """The secrets that sign a delivery: the current one, and the one before it for
    a day after a rotation."""
    secrets = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        secrets.append(endpoint.previous_secret)
    return secrets


@dataclass(slots=True)
class Outcome:
    """What one attempt came to."""

    taken: Taken
    attempted_at: int
    duration_ms: int = 0
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    #: No request was made (the endpoint is disabled or gone).
    skipped: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(slots=True)
class DeliveryView:
    delivery: Delivery
    attempts: list[Attempt] = field(default_factory=list)


class Deliverer:
    """Fans events out to deliveries and attempts them, one loop per process.

    Several processes may run one each (PostgreSQL): the cursor moves by a
    compare-and-set and a delivery is taken under a lease, so each attempt is made
    by one of them.
    """

    def __init__(
        self,
        db: Database,
        *,
        schedule: tuple[float, ...],
        timeout: float,
        disable_after: float,
        allow_private: bool,
        poll_interval: float = 1.0,
        concurrency: int = 16,
        resolve: Resolver | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self.policy = RetryPolicy(schedule)
        self._timeout = timeout
        self._disable_after_us = round(disable_after * MICROS)
        self._allow_private = allow_private
        self._poll_interval = poll_interval
        # Attempts in flight at once: httpx's connection pool slows down as it grows
        # (encode/httpx#3215), so a few dozen connections deliver fastest.
        self._concurrency = concurrency
        self._resolve = resolve
        self._backend = backend
        self._rng = rng or random.Random()
        # A take outlives the longest attempt.
        self._lease_us = round((timeout + 10.0) * MICROS)
        self._render: Render | None = None
        # Events up to here were read and gave no delivery. The stored cursor moves
        # only with the deliveries it covers: most events (every submit's
        # task.created) concern no endpoint, and need no write of their own.
        self._scanned = 0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        # Attempts in flight, and the delivery each one is for.
        self._inflight: dict[asyncio.Task[Outcome], str] = {}
        self._done: list[Outcome] = []

    # -- running --------------------------------------------------------------

    def start(self, render: Render) -> None:
        """Start delivering (in the running event loop); ``render`` builds payloads."""
        self._render = render
        self._wake = asyncio.Event()
        self._loop_task = asyncio.create_task(self._run(), name="taskgate-deliverer")

    def notify(self) -> None:
        """New events, or a delivery made due: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        if self._loop_task is None:
            return
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        self._loop_task = None

    async def _run(self) -> None:
        client = guarded_client(
            allow_private=self._allow_private,
            timeout=self._timeout,
            resolve=self._resolve,
            backend=self._backend,
        )
        try:
            async with client:
                backoff = Backoff("webhook delivery", log)
                while True:
                    try:
                        await self._step(client)
                        backoff.succeeded()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        await asyncio.sleep(backoff.failed(exc))
        finally:
            await self._abandon()

    async def _step(self, client: httpx.AsyncClient) -> None:
        self._wake.clear()
        more = await self.fan_out()
        await self._settle_done()
        free = self._concurrency - len(self._inflight)
        due: int | None = None
        if free > 0:
            # A read says whether anything is due: most steps (events that nobody
            # subscribed to) then write nothing.
            due = await self._db.read(lambda conn: repo.next_due(conn, now_us()))
            now = now_us()
            if due is not None and due <= now:
                taken = await self._db.write(
                    lambda conn: repo.take_due(conn, now, free, now + self._lease_us)
                )
                for item in taken:
                    self._launch(client, item)
                if len(taken) == free:
                    return
                due = await self._db.read(lambda conn: repo.next_due(conn, now_us()))
        if more or self._done:
            return
        delay = self._poll_interval
        if due is not None and len(self._inflight) < self._concurrency:
            delay = min(delay, max(0.0, (due - now_us()) / MICROS))
        if delay > 0:
            await wait_set(self._wake, delay)
            await asyncio.sleep(_GATHER_SECONDS)

    def _launch(self, client: httpx.AsyncClient, taken: Taken) -> None:
        task = asyncio.create_task(self.attempt(client, taken))
        self._inflight[task] = taken.delivery.id

        def finished(done: asyncio.Task[Outcome]) -> None:
            self._inflight.pop(done, None)
            if not done.cancelled() and done.exception() is None:
                self._done.append(done.result())
            self._wake.set()

        task.add_done_callback(finished)

    async def _settle_done(self) -> None:
        if not self._done:
            return
        outcomes, self._done = self._done, []
        await self._db.write(lambda conn: self.settle(conn, outcomes, now_us()))

    async def _abandon(self) -> None:
        """On stop: record the attempts that finished, end those in flight and give
        their deliveries back (due at once, for whichever deliverer runs next)."""
        abandoned = list(self._inflight.values())
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        try:
            await self._settle_done()
            if abandoned:
                await self._db.write(lambda conn: repo.release(conn, abandoned))
        except Exception:
            log.warning("could not record the webhook attempts in flight at stop", exc_info=True)

    # -- fan-out ----------------------------------------------------------------

    async def fan_out(self) -> bool:
        """Turn the next batch of outbox events into deliveries; True if more follow."""
        assert self._render is not None, "start() first"
        render = self._render

        def read(conn: Conn) -> tuple[int | None, list[tuple[int, Event]], dict[str, Any]]:
            position = repo.cursor(conn, CURSOR)
            if position is None:
                return None, [], {}
            batch = outbox.tail(conn, max(position, self._scanned), _FAN_OUT_BATCH)
            return position, batch, repo.enabled_endpoints(conn, {e.account_id for _, e in batch})

        position, batch, endpoints = await self._db.read(read)
        if position is None:
            await self._db.write(self._start_cursor)
            return True
        if not batch:
            return False
        now = now_us()
        rows: list[dict[str, Any]] = []
        callback_accounts: set[str] = set()
        for event_position, event in batch:
            payload: str | None = None
            for target, endpoint_id, url in _targets(event, endpoints.get(event.account_id, ())):
                if payload is None:
                    payload = orjson.dumps(render(event)).decode()
                if target == CALLBACK:
                    callback_accounts.add(event.account_id)
                rows.append(
                    _row(
                        account_id=event.account_id,
                        target=target,
                        endpoint_id=endpoint_id,
                        task_id=event.task_id,
                        event_id=event.id,
                        event_type=event.type,
                        position=event_position,
                        url=url,
                        payload=payload,
                        now=now,
                    )
                )
        last = batch[-1][0]
        if not rows:
            # Read again after a restart, these give nothing again.
            self._scanned = last
            return len(batch) == _FAN_OUT_BATCH
        secrets = {account_id: new_secret() for account_id in callback_accounts}

        def write(conn: Conn) -> bool:
            if not repo.advance_cursor(conn, CURSOR, position, last):
                return False
            repo.insert_many(conn, rows)
            repo.ensure_callback_secrets(conn, secrets)
            return True

        if await self._db.write(write):
            self._scanned = last
        return True

    @staticmethod
    def _start_cursor(conn: Conn) -> None:
        """Deliver from the events after the latest one (a new install's first start,
        or the first start with webhooks)."""
        if repo.cursor(conn, CURSOR) is None:
            repo.start_cursor(conn, CURSOR, outbox.head(conn))

    # -- attempts ---------------------------------------------------------------

    async def attempt(self, client: httpx.AsyncClient, taken: Taken) -> Outcome:
        """POST a delivery once; never raises (a failure is an outcome)."""
        delivery = taken.delivery
        started = now_us()
        outcome = Outcome(taken=taken, attempted_at=started)
        if delivery.target == CALLBACK:
            url = delivery.url
            secrets = [taken.callback_secret] if taken.callback_secret else []
        else:
            endpoint = taken.endpoint
            if endpoint is None:
                outcome.skipped, outcome.error = True, "endpoint_deleted"
                return outcome
            if endpoint.status != "enabled" and delivery.event_type != TEST_EVENT:
                outcome.skipped, outcome.error = True, "endpoint_disabled"
                return outcome
            url = endpoint.url
            secrets = endpoint_secrets(endpoint, started)
        if not url or not secrets:
            outcome.skipped, outcome.error = True, "no_url_or_secret"
            return outcome
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"taskgate/{__version__}",
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, delivery.event_id, timestamp, delivery.payload),
        }
        clock = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                async with client.stream(
                    "POST", url, content=delivery.payload.encode(), headers=headers
                ) as response:
                    outcome.status_code = response.status_code
                    outcome.retry_after = retry_after_seconds(
                        response.headers.get("retry-after"), time.time()
                    )
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break
        except TimeoutError:
            outcome.error = "timeout"
        except Exception as exc:
            outcome.error = delivery_error_code(exc) or "error"
            if outcome.error == "error":
                log.warning("webhook attempt %s failed: %r", delivery.id, exc)
        outcome.duration_ms = max(0, math.ceil((time.monotonic() - clock) * 1000))
        if outcome.error is None and not outcome.delivered:
            code = outcome.status_code or 0
            outcome.error = "redirect" if 300 <= code < 400 else "http_error"
        return outcome

    def settle(self, conn: Conn, outcomes: Sequence[Outcome], now: int) -> None:
        """Record attempts and move each delivery on: delivered, due again, or failed."""
        for outcome in outcomes:
            delivery = outcome.taken.delivery
            values: dict[str, Any] = {
                "updated_at": now,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
            }
            gone = outcome.status_code == 410
            if outcome.skipped:
                values.update(status="failed", next_attempt_at=None)
            else:
                values["attempt_count"] = delivery.attempt_count + 1
                if outcome.delivered:
                    values.update(status="delivered", next_attempt_at=None, delivered_at=now)
                else:
                    failures = delivery.failures + 1
                    delay = (
                        None
                        if gone
                        else self.policy.delay(failures, outcome.retry_after, self._rng)
                    )
                    values["failures"] = failures
                    if delay is None:
                        values.update(status="failed", next_attempt_at=None)
                    else:
                        values["next_attempt_at"] = now + round(delay * MICROS)
            if not repo.settle(conn, delivery.id, values):
                continue
            if not outcome.skipped:
                repo.record_attempt(
                    conn,
                    delivery.id,
                    attempted_at=outcome.attempted_at,
                    status_code=outcome.status_code,
                    duration_ms=outcome.duration_ms,
                    error=outcome.error,
                )
            if delivery.endpoint_id is not None and not outcome.skipped:
                self._track_endpoint(conn, delivery.endpoint_id, outcome, gone, now)
            if delivery.target == CALLBACK and delivery.task_id is not None:
                _track_callback(conn, delivery, outcome, values.get("status", "pending"), now)

    def _track_endpoint(
        self, conn: Conn, endpoint_id: str, outcome: Outcome, gone: bool, now: int
    ) -> None:
        if outcome.delivered:
            repo.clear_failing(conn, endpoint_id)
            return
        if gone:
            reason = "The endpoint answered 410 Gone."
        else:
            since = repo.mark_failing(conn, endpoint_id, now)
            if since is None or now - since < self._disable_after_us:
                return
            reason = f"Every delivery failed for {_span(self._disable_after_us / MICROS)}."
        if repo.disable_endpoint(conn, endpoint_id, reason, now):
            repo.fail_pending_of_endpoint(conn, endpoint_id, "endpoint_disabled", now)

    # -- the API's side: logs, tests and retries ------------------------------------

    async def list(
        self,
        account_id: str,
        endpoint_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        status: str | None = None,
    ) -> tuple[list[DeliveryView], bool]:
        """An endpoint's deliveries, newest first, each with its attempts."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidParam(f"limit is 1–{MAX_PAGE}.", param="limit")
        if cursor is not None and not cursor.startswith("del_"):
            raise InvalidParam("Not a cursor from this list.", param="cursor")
        if status is not None and status not in STATUSES:
            raise InvalidParam(f"status is one of {list(STATUSES)}.", param="status")

        def read(conn: Conn) -> tuple[list[DeliveryView], bool]:
            if endpoints_repo.get(conn, account_id, endpoint_id) is None:
                raise WebhookNotFound(endpoint_id)
            page, more = repo.list_page(
                conn, endpoint_id, limit=limit, before_id=cursor, status=status
            )
            attempts = repo.attempts_of(conn, [d.id for d in page])
            return [DeliveryView(d, attempts[d.id]) for d in page], more

        return await self._db.read(read)

    async def send_test(self, account_id: str, endpoint_id: str) -> DeliveryView:
        """Queue a ``webhook.test`` event to an endpoint (enabled or not)."""
        now = now_us()

        def write(conn: Conn) -> Delivery:
            endpoint = endpoints_repo.get(conn, account_id, endpoint_id)
            if endpoint is None:
                raise WebhookNotFound(endpoint_id)
            event_id = new_id("evt")
            payload = {
                "id": event_id,
                "type": TEST_EVENT,
                "created_at": iso(now),
                "data": {"object": "webhook_test", "webhook_id": endpoint.id, "url": endpoint.url},
            }
            row = _row(
                account_id=account_id,
                target=endpoint.id,
                endpoint_id=endpoint.id,
                task_id=None,
                event_id=event_id,
                event_type=TEST_EVENT,
                position=None,
                url=None,
                payload=orjson.dumps(payload).decode(),
                now=now,
            )
            repo.insert_many(conn, [row])
            found = repo.get(conn, account_id, row["id"])
            assert found is not None
            return found

        delivery = await self._db.write(write)
        self.notify()
        return DeliveryView(delivery)

    async def retry(self, account_id: str, endpoint_id: str, delivery_id: str) -> DeliveryView:
        """Make a delivery due now, at the start of its retry schedule (delivered
        ones too: the receiver asked for the event again)."""
        now = now_us()

        def write(conn: Conn) -> DeliveryView:
            endpoint = endpoints_repo.get(conn, account_id, endpoint_id)
            if endpoint is None:
                raise WebhookNotFound(endpoint_id)
            found = repo.get(conn, account_id, delivery_id)
            if found is None or found.endpoint_id != endpoint_id:
                raise DeliveryNotFound(delivery_id)
            if endpoint.status != "enabled" and found.event_type != TEST_EVENT:
                raise WebhookDisabled(endpoint_id)
            repo.requeue(conn, delivery_id, now)
            again = repo.get(conn, account_id, delivery_id)
            assert again is not None
            return DeliveryView(again, repo.attempts_of(conn, [delivery_id])[delivery_id])

        view = await self._db.write(write)
        self.notify()
        return view

    async def callback_secret(self, account_id: str) -> str:
        """The secret that signs the account's callbacks (made on first use)."""
        secret = await self._db.read(lambda conn: repo.callback_secret(conn, account_id))
        if secret is not None:
            return secret
        offered = new_secret()

        def write(conn: Conn) -> str:
            repo.ensure_callback_secrets(conn, {account_id: offered})
            stored = repo.callback_secret(conn, account_id)
            assert stored is not None
            return stored

        return await self._db.write(write)


def _track_callback(
    conn: Conn, delivery: Delivery, outcome: Outcome, status: str, now: int
) -> None:
    """Keep the task's ``callback`` object: the terminal event's delivery decides
    the status; every attempt counts."""
    callback_status: str | None = None
    delivered_at: int | None = None
    if delivery.event_type in TERMINAL_TYPES:
        if status == "delivered":
            callback_status, delivered_at = "delivered", now
        elif status == "failed":
            callback_status = "failed"
    repo.track_callback(
        conn,
        delivery.task_id or "",
        attempted=not outcome.skipped,
        error=outcome.error,
        status=callback_status,
        delivered_at=delivered_at,
    )


def _span(seconds: float) -> str:
    """``5 days``, ``2 hours``, ``90 seconds``: a duration in its largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _targets(
    event: Event, endpoints: Sequence[WebhookEndpoint]
) -> list[tuple[str, str | None, str | None]]:
    """Where an event goes: (target, endpoint id, callback url) per delivery."""
    found: list[tuple[str, str | None, str | None]] = [
        (endpoint.id, endpoint.id, None)
        for endpoint in endpoints
        if event.type in endpoint.enabled_events and event.created_at >= endpoint.created_at
    ]
    url = event.data.get("callback_url")
    wanted = event.data.get("callback_events") or ()
    if url and (event.type in TERMINAL_TYPES or event.type in wanted):
        found.append((CALLBACK, None, url))
    return found


def _row(
    *,
    account_id: str,
    target: str,
    endpoint_id: str | None,
    task_id: str | None,
    event_id: str,
    event_type: str,
    position: int | None,
    url: str | None,
    payload: str,
    now: int,
) -> dict[str, Any]:
    """A new pending delivery, due now."""
    return {
        "id": new_id("del"),
        "account_id": account_id,
        "target": target,
        "endpoint_id": endpoint_id,
        "task_id": task_id,
        "event_id": event_id,
        "event_type": event_type,
        "position": position,
        "url": url,
        "payload": payload,
        "status": "pending",
        "attempt_count": 0,
        "failures": 0,
        "next_attempt_at": now,
        "leased_until": None,
        "last_status_code": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
        "delivered_at": None,
    }
