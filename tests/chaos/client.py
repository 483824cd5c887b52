"""The chaos client: submits tasks of mixed outcomes to the API nodes and records
every acknowledged submission.

A submission carries an ``Idempotency-Key`` and is retried, with that key and the
same body, on a connection error, a timeout or a 5xx, against the next API node:
an acknowledgement lost to a kill returns the task the first attempt created
instead of making a second. A cancel is retried the same way.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: How long a single request may take before the client counts a timeout.
REQUEST_TIMEOUT = 10.0
#: The most the client waits between two tries of one request.
MAX_BACKOFF = 1.0


@dataclass(frozen=True)
class Kind:
    """A kind of task: its ``wait`` input and the outcome it must end with."""

    name: str
    input: dict[str, Any]
    #: The status the task ends with (a kill may add attempts, never change this,
    #: except that a success whose attempts all ran into kills fails ``worker_lost``).
    status: str
    #: The error code of a failed task.
    error: str | None = None
    #: Attempts the task needs at least.
    min_attempts: int = 1
    cancel: bool = False
    #: Credits charged when it completes (thousandths).
    charge_milli: int = 0
    priority: int = 0


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("ok", {"seconds": 0.3, "steps": 2}, "completed"),
        Kind("paid", {"seconds": 0.2, "credits": "0.250"}, "completed", charge_milli=250),
        Kind("retried", {"seconds": 0.1, "fail_attempts": 1}, "completed", min_attempts=2),
        Kind("failing", {"seconds": 0.1, "fail": True}, "failed", error="wait_failed"),
        Kind(
            "retryable-failing",
            {"seconds": 0.05, "fail": True, "retryable": True},
            "failed",
            error="wait_failed",
            min_attempts=3,
        ),
        # Cancelled while queued (no attempt) or while running.
        Kind("cancelled", {"seconds": 30}, "cancelled", min_attempts=0, cancel=True),
        # Submitted after each fault is repaired, ahead of the queue, to time the
        # recovery.
        Kind("probe", {"seconds": 0}, "completed", priority=10),
    )
}

#: The mix of kinds the client submits (weights).
MIX = {"ok": 35, "paid": 20, "retried": 15, "failing": 10, "retryable-failing": 10, "cancelled": 10}


@dataclass
class Submission:
    key: str
    kind: str
    burst: bool = False
    task_id: str | None = None
    acked_at: float | None = None
    #: Requests made for it (the submit and, for the cancelled kind, the cancel).
    tries: int = 0
    #: The acknowledgement was an idempotent replay (200) of an earlier attempt.
    replayed: bool = False
    cancel_status: int | None = None
    #: Why it was given up (no acknowledgement), or why its cancel was.
    gave_up: str | None = None


@dataclass
class Counts:
    requests: int = 0
    retries: int = 0
    replays: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    status: Counter[int] = field(default_factory=Counter)
    #: The first few 5xx answers other than 503, and any 4xx: (status, body).
    evidence: list[tuple[int, str]] = field(default_factory=list)


class Client:
    """Submitter threads over the API nodes; ``record`` holds every submission."""

    def __init__(
        self,
        base_urls: Callable[[], list[str]],
        api_key: str,
        *,
        threads: int,
        give_up_after: float,
        seed: int,
    ) -> None:
        self._base_urls = base_urls
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._give_up_after = give_up_after
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._todo: queue.Queue[Submission | None] = queue.Queue()
        self._made = 0
        self.record: list[Submission] = []
        self.counts = Counts()
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"chaos-client-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- what to submit ---------------------------------------------------------

    def plan(self, count: int, *, burst: bool = False) -> list[Submission]:
        names = list(MIX)
        weights = [MIX[name] for name in names]
        with self._lock:
            made = [self._new(self._rng.choices(names, weights)[0], burst) for _ in range(count)]
        for submission in made:
            self._todo.put(submission)
        return made

    def probe(self, base_url: str | None = None) -> Submission:
        """Submit one probe now, on this thread (to ``base_url`` first); returns once
        it is acknowledged or given up."""
        with self._lock:
            submission = self._new("probe", False)
        with httpx.Client(headers=self._headers, timeout=REQUEST_TIMEOUT) as http:
            self._submit(http, submission, prefer=base_url)
        return submission

    def _new(self, kind: str, burst: bool) -> Submission:
        self._made += 1
        submission = Submission(f"chaos-{self._made:06d}", kind, burst)
        self.record.append(submission)
        return submission

    def pending(self) -> int:
        """Submissions not yet acknowledged nor given up (cancels included)."""
        return self._todo.unfinished_tasks

    def acked(self, *, burst: bool | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self.record
                if s.task_id is not None and (burst is None or s.burst == burst)
            )

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join(timeout=2 * REQUEST_TIMEOUT)

    # -- the threads -------------------------------------------------------------

    def _work(self, index: int) -> None:
        with httpx.Client(headers=self._headers, timeout=REQUEST_TIMEOUT) as http:
            turn = index
            while (submission := self._todo.get()) is not None:
                try:
                    urls = self._base_urls()
                    self._submit(http, submission, prefer=urls[turn % len(urls)])
                    if submission.task_id is not None and KINDS[submission.kind].cancel:
                        self._cancel(http, submission)
                except Exception as exc:  # the record says what went wrong
                    log.exception("chaos client: %s", submission.key)
                    submission.gave_up = submission.gave_up or f"client error: {exc!r}"
                finally:
                    self._todo.task_done()
                turn += 1

    def _submit(self, http: httpx.Client, submission: Submission, *, prefer: str | None) -> None:
        kind = KINDS[submission.kind]
        body = {
            "workflow": "wait",
            "input": kind.input,
            "metadata": {"chaos_key": submission.key, "kind": kind.name},
            "priority": kind.priority,
        }
        headers = {"Idempotency-Key": submission.key}
        answer = self._until_answered(http, "POST", "/v1/tasks", body, headers, prefer, submission)
        if answer is None:
            return
        if answer.status_code in (200, 201):
            submission.task_id = str(answer.json()["id"])
            submission.acked_at = time.monotonic()
            submission.replayed = answer.status_code == 200
            if submission.replayed:
                with self._lock:
                    self.counts.replays += 1
        else:
            submission.gave_up = f"answered {answer.status_code}: {answer.text[:300]}"

    def _cancel(self, http: httpx.Client, submission: Submission) -> None:
        path = f"/v1/tasks/{submission.task_id}/cancel"
        answer = self._until_answered(http, "POST", path, None, {}, None, submission)
        if answer is not None:
            submission.cancel_status = answer.status_code

    def _until_answered(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        prefer: str | None,
        submission: Submission,
    ) -> httpx.Response | None:
        """The first answer that is not a 5xx, trying the nodes in turn until
        ``give_up_after``; None if none came."""
        deadline = time.monotonic() + self._give_up_after
        urls = self._base_urls()
        start = urls.index(prefer) if prefer in urls else 0
        delay = 0.05
        for n in range(1_000_000):
            urls = self._base_urls()
            url = urls[(start + n) % len(urls)]
            submission.tries += 1
            with self._lock:
                self.counts.requests += 1
                if n:
                    self.counts.retries += 1
            wait = delay
            try:
                answer = http.request(method, url + path, json=body, headers=headers)
            except httpx.TimeoutException:
                with self._lock:
                    self.counts.timeouts += 1
            except httpx.TransportError:
                with self._lock:
                    self.counts.connection_errors += 1
            else:
                with self._lock:
                    self.counts.status[answer.status_code] += 1
                    worth_keeping = answer.status_code >= 400 and answer.status_code != 503
                    if worth_keeping and len(self.counts.evidence) < 10:
                        self.counts.evidence.append((answer.status_code, answer.text[:500]))
                if answer.status_code < 500:
                    return answer
                retry_after = answer.headers.get("retry-after", "")
                if answer.status_code == 503 and retry_after.isdigit():
                    wait = max(wait, min(float(retry_after), MAX_BACKOFF))
            if time.monotonic() + wait > deadline:
                submission.gave_up = f"{method} {path}: no answer in {self._give_up_after:g}s"
                return None
            # Pacing between tries of one request, not a wait for state.
            time.sleep(wait)
            delay = min(delay * 2, MAX_BACKOFF)
        return None
