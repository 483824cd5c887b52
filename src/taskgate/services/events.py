"""Following the outbox: event streams of a task or an account, and waiting for a
task to end.

One :class:`EventHub` per API process reads the events committed since it last
looked (one query, whoever listens) and hands each to the subscriptions of its task
and account. It looks when told that something was written (the channel's ``api``
wake-up from workers and other API processes, or this process's own writes) and,
while anyone listens, at least every poll interval, so a lost wake-up costs
latency, never an event. A subscription registers before its reader reads the
past from the database, so nothing falls between the two; what arrives twice is
dropped by position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from taskgate.core.aio import wait_set
from taskgate.core.errors import InvalidParam, TaskNotFound
from taskgate.core.models import Event, Task
from taskgate.core.states import TERMINAL_EVENT
from taskgate.services.backoff import Backoff
from taskgate.store import events as repo
from taskgate.store import tasks as tasks_repo
from taskgate.store.db import Conn, Database

log = logging.getLogger(__name__)

TERMINAL_TYPES = frozenset(str(kind) for kind in TERMINAL_EVENT.values())
_BATCH = 1000
# Stored events a resumed account stream replays at most; past that, it resumes again.
_BACKLOG_LIMIT = 10_000
# Events a subscriber may fall behind by before it is dropped (it reconnects and
# resumes from its last event id).
_QUEUE_LIMIT = 10_000
# How often at most a woken stream makes the hub read the outbox again.
_CATCH_UP_SECONDS = 0.01
# An account with more open streams than this has them woken together, at most
# this long after an event: a task's events a few milliseconds apart (created,
# started, completed) then go out in one write per stream instead of one each.
# With few streams each is woken at once.
_WAKE_AT_ONCE = 64
_COALESCE_SECONDS = 0.01
# Streams woken in one go of such an account, between outbox reads.
_WAKE_SLICE = 500
# The first wait before reading again when committed events are held back by an
# older transaction (PostgreSQL's horizon); it doubles up to the poll interval.
_HELD_FIRST_SECONDS = 0.01


@dataclass(eq=False)
class Subscription:
    """Events of one task or one account, in commit order, as the hub reads them.

    A plain deque and one waiter, rather than an ``asyncio.Queue``: an account
    with thousands of open streams hands each event to every one of them, and the
    queue's bookkeeping was a tenth of that cost. ``None`` in ``items`` ends the
    stream (it fell too far behind, or the server stops).

    A consumer that is parked in :meth:`take` may leave a ``sink``: a wake-up then
    hands the waiting events to it directly, in the hub's own step, and the
    consumer stays parked. Waking thousands of consumers one by one (a task switch
    each, and their whole chain of generators) cost more than the writes. The sink
    answers False when it cannot take them now (its last write still waits for
    the peer); the consumer is then woken and takes them itself.
    """

    task_id: str | None
    account_id: str | None
    #: Run after a wake-up, before the items are taken (the hub's catch-up).
    before_take: Callable[[], Awaitable[None]] | None = None
    items: deque[tuple[int, Event] | None] = field(default_factory=deque)
    waiter: asyncio.Future[None] | None = None
    overflowed: bool = False
    sink: Callable[[list[Event]], bool] | None = None
    #: Events at or before this hub position were already sent (a resumed
    #: stream's replay overlaps what the hub hands over meanwhile).
    floor: int = 0
    #: The hub position of the last event handed over (queued or sent).
    handed: int = 0

    def put(self, item: tuple[int, Event] | None, *, wake: bool = True) -> None:
        if self.overflowed:
            return
        if item is not None:
            self.handed = item[0]
            if len(self.items) >= _QUEUE_LIMIT:
                self.overflowed = True
                self.items.clear()
                item = None
                wake = True
        self.items.append(item)
        if wake:
            self.wake()

    def receive(self, wave: _Wave) -> None:
        """Hands over the account's wave, less what this subscription already has,
        and wakes it (or has its parked consumer's sink write it)."""
        skip = max(self.handed, self.floor)
        if wave.last <= skip or self.overflowed:
            return
        if wave.first > skip:
            items, events = wave.items, wave.events
        else:
            items = [item for item in wave.items if item[0] > skip]
            events = [event for _position, event in items]
        self.handed = wave.last
        waiter = self.waiter
        if (
            self.sink is not None
            and not self.items
            and waiter is not None
            and not waiter.done()
            and self.sink(events)
        ):
            self.floor = wave.last
            return
        for item in items:
            self.put(item, wake=False)
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._hand_to_sink():
            return
        waiter.set_result(None)

    def _hand_to_sink(self) -> bool:
        """Whether the sink took the waiting events (else the consumer takes them:
        also when they are a long catch-up, or the end of the stream)."""
        sink, items = self.sink, self.items
        if sink is None or not items or len(items) > _BATCH:
            return False
        fresh: list[Event] = []
        position = self.floor
        for item in items:
            if item is None:
                return False
            position = item[0]
            if position > self.floor:
                fresh.append(item[1])
        if fresh and not sink(fresh):
            return False
        self.floor = position
        items.clear()
        return True

    async def take(self) -> list[tuple[int, Event]] | None:
        """Waits for an item, then takes every item already there (up to a batch),
        so that a stream that fell behind sends them as one write. None when the
        stream must end."""
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
            if self.before_take is not None:
                await self.before_take()
        taken: list[tuple[int, Event]] = []
        while self.items and len(taken) < _BATCH:
            item = self.items.popleft()
            if item is None:
                return None
            taken.append(item)
        return taken


class _Wave:
    """An account's events since its streams were last woken: one list that all of
    them are handed (and a sink writes as is)."""

    __slots__ = ("events", "first", "items", "last")

    def __init__(self, items: list[tuple[int, Event]]) -> None:
        self.items = items
        self.events = [event for _position, event in items]
        self.first = items[0][0]
        self.last = items[-1][0]


@dataclass(frozen=True, slots=True)
class TaskStart:
    """Where a task's stream starts: its state now (the snapshot, unless resuming),
    and the events after the resume point that are already stored."""

    task: Task
    backlog: list[Event]


class EventHub:
    def __init__(self, db: Database, *, poll_interval: float) -> None:
        self._db = db
        self._poll_interval = poll_interval
        self._position: int | None = None  # None: nobody listens, nothing read
        self._by_task: dict[str, set[Subscription]] = {}
        self._by_account: dict[str, set[Subscription]] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._reading = False
        self._again = False
        self._last_read = 0.0
        # Events of accounts with many streams, waiting for the coalesced wake-up.
        self._waves: dict[str, list[tuple[int, Event]]] = {}
        self._wake_timer: asyncio.TimerHandle | None = None
        self._waking: asyncio.Task[None] | None = None
        # Reading again while events are held back (see _look_again).
        self._held_timer: asyncio.TimerHandle | None = None
        self._held_wait = _HELD_FIRST_SECONDS

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        for timer in (self._wake_timer, self._held_timer):
            if timer is not None:
                timer.cancel()
        self._wake_timer = self._held_timer = None
        if self._waking is not None:
            self._waking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waking
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for subs in (*self._by_task.values(), *self._by_account.values()):
            for sub in subs:
                sub.put(None)

    def notify(self) -> None:
        """Something was written: look now (called from the event loop's thread)."""
        self._wake.set()

    @property
    def listening(self) -> int:
        return sum(map(len, self._by_task.values())) + sum(map(len, self._by_account.values()))

    async def _run(self) -> None:
        backoff = Backoff("event hub: reading the outbox", log)
        while True:
            await wait_set(self._wake, self._poll_interval)
            self._wake.clear()
            if self._position is None:
                continue
            try:
                await self._read()
                backoff.succeeded()
            except Exception as exc:
                # (streams keep their place: the events missed are read on recovery)
                await asyncio.sleep(backoff.failed(exc))

    async def catch_up(self) -> None:
        """Read the outbox now, unless it was read in the last ``_CATCH_UP_SECONDS``.

        Streams call this when an event wakes them, before they write. Handing an
        event to thousands of streams takes a while; events committed meanwhile (a
        fast task's ``task.completed`` right after its ``task.started``) then reach
        the streams still waiting to run, which send both in one write instead of
        starting a second round after the first.
        """
        if self._reading or time.monotonic() - self._last_read < _CATCH_UP_SECONDS:
            return
        await self._read()

    async def _read(self) -> None:
        if self._reading:
            # A read is under way (awaiting the database): it reads once more after.
            self._again = True
            return
        self._reading = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._last_read = time.monotonic()
                await self._read_all()
        finally:
            self._reading = False

    async def _read_all(self) -> None:
        while self._position is not None:
            after = self._position
            found, held = await self._db.read(partial(repo.tail_held, after=after, limit=_BATCH))
            for position, event in found:
                self._dispatch(position, event)
            if found:
                self._position = found[-1][0]
            if len(found) < _BATCH:
                self._look_again(held)
                return

    def _look_again(self, held: bool) -> None:
        """With committed events held back by an older transaction (PostgreSQL's
        horizon), read again soon rather than at the next poll: the transaction's
        end wakes nobody. The wait doubles while they stay held back."""
        if not held:
            self._held_wait = _HELD_FIRST_SECONDS
            return
        if self._held_timer is None:
            self._held_timer = asyncio.get_running_loop().call_later(
                self._held_wait, self._held_over
            )
            self._held_wait = min(self._held_wait * 2, self._poll_interval)

    def _held_over(self) -> None:
        self._held_timer = None
        self._wake.set()

    def _dispatch(self, position: int, event: Event) -> None:
        item = (position, event)
        for sub in self._by_task.get(event.task_id, ()):
            sub.put(item)
        subs = self._by_account.get(event.account_id, ())
        if len(subs) <= _WAKE_AT_ONCE:
            for sub in subs:
                sub.put(item)
            return
        self._waves.setdefault(event.account_id, []).append(item)
        if self._wake_timer is None and self._waking is None:
            self._wake_timer = asyncio.get_running_loop().call_later(
                _COALESCE_SECONDS, self._start_waking
            )

    def _start_waking(self) -> None:
        self._wake_timer = None
        self._waking = asyncio.get_running_loop().create_task(
            self._wake_accounts(), name="event-hub-wake"
        )

    async def _wake_accounts(self) -> None:
        """Hand each account's wave to its streams, a slice at a time.

        Before each slice the outbox is read again (at most every
        ``_CATCH_UP_SECONDS``): events committed meanwhile, such as a fast task's
        next events, then leave in the same write as the first to the streams not
        yet written to; the others get them in the next pass. Between slices the
        loop serves other requests. Waves that arrive while this runs are handed
        over by it too, before it ends.
        """
        try:
            while self._waves:
                account_id = next(iter(self._waves))
                await self._catch_up_quietly()
                items = self._waves.pop(account_id, None)
                if not items:
                    continue
                wave = _Wave(items)
                subs = list(self._by_account.get(account_id, ()))
                for start in range(0, len(subs), _WAKE_SLICE):
                    if start:
                        await asyncio.sleep(0)  # let other requests in
                        await self._catch_up_quietly()
                        more = self._waves.get(account_id)
                        if more:
                            wave = _Wave(wave.items + more)
                    for sub in subs[start : start + _WAKE_SLICE]:
                        sub.receive(wave)
        finally:
            self._waking = None

    async def _catch_up_quietly(self) -> None:
        try:
            await self.catch_up()
        except Exception:
            # The runner reads these events again, and backs off, on its next turn.
            log.debug("event hub: catching up before a wake-up failed", exc_info=True)

    # -- subscriptions -------------------------------------------------------

    async def _subscribe(self, sub: Subscription) -> Subscription:
        if self._position is None:
            # The first listener: from here on, every committed event is read.
            head = await self._db.read(repo.head)
            if self._position is None:  # unless another first listener came first
                self._position = head
        if sub.task_id is not None:
            self._by_task.setdefault(sub.task_id, set()).add(sub)
        else:
            assert sub.account_id is not None
            self._by_account.setdefault(sub.account_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        index, key = (
            (self._by_task, sub.task_id)
            if sub.task_id is not None
            else (self._by_account, sub.account_id)
        )
        assert key is not None
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]
        if not self._by_task and not self._by_account:
            self._position = None

    @contextlib.asynccontextmanager
    async def task_events(
        self, account_id: str, task_id: str, after_seq: int | None
    ) -> AsyncIterator[tuple[TaskStart, AsyncIterator[list[Event]]]]:
        """A task's stream: where it starts, then every later event, in order, ending
        after the terminal one. Events come in lists: all those waiting at once.

        ``after_seq`` None: start from the task's current state (the snapshot);
        a number: the events after that sequence number (a resumed stream).
        """
        sub = await self._subscribe(Subscription(task_id, None, self.catch_up))
        try:

            def read(conn: Conn) -> TaskStart:
                task = tasks_repo.get(conn, task_id, account_id)
                if task is None:
                    raise TaskNotFound(task_id)
                if after_seq is None:
                    return TaskStart(task, [])
                if after_seq > task.event_seq:
                    raise InvalidParam(
                        f"The task has no event {after_seq} yet.", param="last_event_id"
                    )
                return TaskStart(task, repo.for_task(conn, task_id, after_seq))

            start = await self._db.read(read)
            last = start.task.event_seq if after_seq is None else after_seq
            yield start, self._follow_task(sub, start, last)
        finally:
            self._unsubscribe(sub)

    async def _follow_task(
        self, sub: Subscription, start: TaskStart, last: int
    ) -> AsyncIterator[list[Event]]:
        if start.backlog:
            batch = _through_terminal(start.backlog)
            yield batch
            if batch[-1].type in TERMINAL_TYPES:
                return
            last = batch[-1].seq
        elif start.task.terminal and last >= start.task.event_seq:
            return
        while True:
            items = await sub.take()
            if items is None:
                return  # fell too far behind, or the server stops: the client resumes
            fresh: list[Event] = []
            for _position, event in items:
                if event.seq <= last:
                    continue
                if event.seq > last + 1:
                    # Cannot happen with commit-ordered reads; if it does, fill the gap.
                    missing = await self._db.read(
                        partial(repo.for_task, task_id=event.task_id, after_seq=last)
                    )
                    fresh.extend(e for e in missing if e.seq <= event.seq)
                else:
                    fresh.append(event)
                last = fresh[-1].seq if fresh else last
            if fresh:
                batch = _through_terminal(fresh)
                yield batch
                if batch[-1].type in TERMINAL_TYPES:
                    return

    @contextlib.asynccontextmanager
    async def account_events(
        self,
        account_id: str,
        after_event_id: str | None,
        sink: Callable[[list[Event]], bool] | None = None,
    ) -> AsyncIterator[AsyncIterator[list[Event]]]:
        """Every event of an account after ``after_event_id`` (or from now), in
        commit order, in lists of those waiting at once; never ends by itself.

        With a ``sink``, once the stored events are replayed, events that arrive
        while the iterator waits go to the sink instead, in the same order, and the
        iterator yields only those the sink refused (see :class:`Subscription`).
        """
        sub = await self._subscribe(Subscription(None, account_id, self.catch_up))
        try:
            backlog: list[tuple[int, Event]] = []
            if after_event_id is not None:
                known = await self._db.read(
                    partial(repo.exists, account_id=account_id, event_id=after_event_id)
                )
                if not known:
                    raise InvalidParam(
                        f"No event {after_event_id!r} in this account.", param="last_event_id"
                    )
                backlog = await self._db.read(
                    partial(
                        repo.for_account,
                        account_id=account_id,
                        after_event_id=after_event_id,
                        limit=_BACKLOG_LIMIT,
                    )
                )
            yield self._follow_account(sub, backlog, sink)
        finally:
            sub.sink = None
            self._unsubscribe(sub)

    async def _follow_account(
        self,
        sub: Subscription,
        backlog: list[tuple[int, Event]],
        sink: Callable[[list[Event]], bool] | None,
    ) -> AsyncIterator[list[Event]]:
        for offset in range(0, len(backlog), _BATCH):
            chunk = backlog[offset : offset + _BATCH]
            yield [event for _position, event in chunk]
            sub.floor = chunk[-1][0]
        if len(backlog) >= _BACKLOG_LIMIT:
            # More is stored than one replay sends: end here, and the client
            # resumes after the last event it received.
            return
        sub.sink = sink
        while True:
            items = await sub.take()
            if items is None:
                return
            fresh = [event for position, event in items if position > sub.floor]
            sub.floor = max(sub.floor, items[-1][0])
            if fresh:
                yield fresh

    async def until_terminal(self, account_id: str, task_id: str) -> None:
        """Return once the task is terminal (the caller bounds the wait with
        ``asyncio.timeout``)."""
        async with self.task_events(account_id, task_id, None) as (start, events):
            if start.task.terminal:
                return
            async for _batch in events:
                pass


def _through_terminal(events: list[Event]) -> list[Event]:
    """``events`` up to and including the first terminal one."""
    for index, event in enumerate(events):
        if event.type in TERMINAL_TYPES:
            return events[: index + 1]
    return events
