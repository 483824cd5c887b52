"""What a chaos run is checked against: the database as it stands once everything
has settled, the webhook receiver's requests, and the client's record.

Reading the tables directly (not through the API) keeps the checks independent of
the code under test's own views; ``taskgate doctor`` checks the credits on top.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from taskgate.store.db import Database
from taskgate.store.tables import accounts, events, tasks, webhook_deliveries
from tests.acceptance.receiver import Received, Receiver, verify
from tests.chaos.client import KINDS, Submission

TERMINAL = frozenset({"completed", "failed", "cancelled"})
#: Event types a webhook endpoint created without ``enabled_events`` receives.
NOT_DELIVERED_BY_DEFAULT = frozenset({"task.progress"})
TERMINAL_EVENTS = frozenset({"task.completed", "task.failed", "task.cancelled"})


@dataclass
class Snapshot:
    """The database's tasks, events and deliveries at one moment."""

    tasks: dict[str, dict[str, Any]]
    #: Event id → (task id, type), of the types the endpoint receives.
    events: dict[str, tuple[str, str]]
    deliveries: Counter[str]
    #: Events fanned out to one endpoint more than once: event id → deliveries.
    fanned_twice: dict[str, int]
    account: dict[str, Any]

    @staticmethod
    def read(db: Database, account_id: str) -> Snapshot:
        def read(conn: Any) -> Snapshot:
            task_rows = {
                row["id"]: dict(row)
                for row in conn.execute(
                    select(
                        tasks.c.id,
                        tasks.c.status,
                        tasks.c.attempts,
                        tasks.c.max_attempts,
                        tasks.c.error,
                        tasks.c.metadata,
                        tasks.c.worker_id,
                        tasks.c.charged_credits,
                        tasks.c.cancel_requested_at,
                    ).where(tasks.c.account_id == account_id)
                ).mappings()
            }
            event_rows = {
                row.id: (row.task_id, row.type)
                for row in conn.execute(
                    select(events.c.id, events.c.task_id, events.c.type).where(
                        events.c.account_id == account_id,
                        events.c.type.not_in(NOT_DELIVERED_BY_DEFAULT),
                    )
                )
            }
            delivery_counts: Counter[str] = Counter(
                {
                    row.status: int(row.n)
                    for row in conn.execute(
                        select(webhook_deliveries.c.status, func.count().label("n")).group_by(
                            webhook_deliveries.c.status
                        )
                    )
                }
            )
            per_event = func.count().label("n")
            fanned_twice = {
                row.event_id: int(row.n)
                for row in conn.execute(
                    select(webhook_deliveries.c.event_id, per_event)
                    .where(webhook_deliveries.c.endpoint_id.is_not(None))
                    .group_by(webhook_deliveries.c.event_id, webhook_deliveries.c.endpoint_id)
                    .having(per_event > 1)
                )
            }
            account = dict(
                conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().one()
            )
            return Snapshot(task_rows, event_rows, delivery_counts, fanned_twice, account)

        return db.read_sync(read)

    def unfinished(self) -> list[str]:
        return [task_id for task_id, row in self.tasks.items() if row["status"] not in TERMINAL]


def settled(snapshot: Snapshot, record: list[Submission], delivered: set[str]) -> bool:
    """Nothing left to happen: every acknowledged task exists and has ended, no task
    is queued or running, no delivery is pending, every event has arrived."""
    return (
        all(s.task_id in snapshot.tasks for s in record if s.task_id is not None)
        and not snapshot.unfinished()
        and not snapshot.deliveries.get("pending")
        and set(snapshot.events) <= delivered
    )


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def problem(self, message: str, examples: list[str] | None = None) -> None:
        if examples:
            message += ": " + ", ".join(examples[:8]) + (" …" if len(examples) > 8 else "")
        self.problems.append(message)


def check_tasks(snapshot: Snapshot, record: list[Submission], verdict: Verdict) -> None:
    """Every acknowledged task exists, once, has ended, and ended as its kind must."""
    by_key: dict[str, list[str]] = {}
    for task_id, row in snapshot.tasks.items():
        key = (row["metadata"] or {}).get("chaos_key")
        by_key.setdefault(str(key), []).append(task_id)
    lost: list[str] = []
    wrong: list[str] = []
    stuck: list[str] = []
    mismatched: list[str] = []
    outcomes: Counter[str] = Counter()
    lost_to_kills = retried_by_kills = 0
    acked = [s for s in record if s.task_id is not None]
    for s in acked:
        assert s.task_id is not None
        found = snapshot.tasks.get(s.task_id)
        if found is None:
            lost.append(f"{s.task_id} ({s.kind}, {s.key})")
            continue
        row = found
        if by_key.get(s.key) != [s.task_id]:
            mismatched.append(f"{s.key} → {by_key.get(s.key)} (acknowledged {s.task_id})")
        status, attempts = row["status"], row["attempts"]
        outcomes[status] += 1
        if status not in TERMINAL:
            stuck.append(f"{s.task_id} {status} worker {row['worker_id']}")
            continue
        kind = KINDS[s.kind]
        code = (row["error"] or {}).get("code")
        if kind.cancel and s.cancel_status not in (200, 409):
            # The cancel was never acknowledged: the task may end either way.
            continue
        if status == "failed" and code == "worker_lost" and attempts >= row["max_attempts"]:
            # Every attempt ran into a kill: the lease ran out each time.
            lost_to_kills += 1
            continue
        ok = status == kind.status and attempts >= kind.min_attempts
        if kind.error is not None:
            ok = ok and code == kind.error
        if kind.name == "retryable-failing":
            ok = ok and attempts == row["max_attempts"]
        if not ok:
            wrong.append(f"{s.task_id} {kind.name}: {status} after {attempts} attempt(s), {code}")
        elif attempts > kind.min_attempts and kind.name != "retryable-failing":
            retried_by_kills += 1
    duplicates = [f"{key}: {ids}" for key, ids in by_key.items() if len(ids) > 1]
    unacked = [
        s.key for s in record if s.task_id is None and by_key.get(s.key) and s.gave_up is not None
    ]
    unfinished_others = [t for t in snapshot.unfinished() if t not in {s.task_id for s in acked}]
    if lost:
        verdict.problem(f"{len(lost)} acknowledged task(s) missing from the database", lost)
    if stuck:
        verdict.problem(f"{len(stuck)} acknowledged task(s) never ended", stuck)
    if unfinished_others:
        verdict.problem(f"{len(unfinished_others)} other task(s) never ended", unfinished_others)
    if wrong:
        verdict.problem(f"{len(wrong)} task(s) ended other than their kind must", wrong)
    if duplicates:
        verdict.problem(f"{len(duplicates)} idempotency key(s) made several tasks", duplicates)
    if mismatched:
        verdict.problem("acknowledged ids disagree with the stored keys", mismatched)
    verdict.figures.update(
        tasks_acknowledged=len(acked),
        tasks_by_kind=dict(Counter(s.kind for s in acked)),
        outcomes=dict(outcomes),
        retried_by_kills=retried_by_kills,
        lost_to_kills=lost_to_kills,
        unacknowledged_but_stored=len(unacked),
    )


def check_credits(snapshot: Snapshot, record: list[Submission], verdict: Verdict) -> None:
    """Nothing stays reserved, and the charges are exactly those of the completed
    paid tasks."""
    expected = sum(
        KINDS[s.kind].charge_milli
        for s in record
        if s.task_id is not None and snapshot.tasks.get(s.task_id, {}).get("status") == "completed"
    )
    account = snapshot.account
    if account["credits_reserved"] != 0:
        verdict.problem(f"{account['credits_reserved']} millicredits still reserved")
    if account["credits_charged"] != expected:
        verdict.problem(
            f"charged {account['credits_charged']} millicredits, the completed paid tasks "
            f"cost {expected}"
        )
    if account["running"] != 0:
        verdict.problem(f"the account still counts {account['running']} running task(s)")
    verdict.figures["credits_charged"] = f"{account['credits_charged'] / 1000:.3f}"


def check_webhooks(
    snapshot: Snapshot, receiver: Receiver, secret: str, record: list[Submission], verdict: Verdict
) -> None:
    """Every event was delivered, signed, with its stored type; each acknowledged
    task's terminal event among them."""
    # A request whose sender died while sending its body is not a delivery (the
    # sender never saw the answer, and tries again): the receiver answered what
    # arrived of it.
    accepted, cut_off = [], 0
    for received in receiver.accepted():
        length = received.headers.get("content-length", "")
        if length.isdigit() and int(length) != len(received.body):
            cut_off += 1
        else:
            accepted.append(received)
    bad_signature: list[str] = []
    wrong_payload: list[str] = []
    seen: Counter[str] = Counter()
    first_at: dict[str, float] = {}
    gaps: list[float] = []
    for received in accepted:
        seen[received.webhook_id] += 1
        if received.webhook_id in first_at:
            gaps.append(received.at - first_at[received.webhook_id])
        else:
            first_at[received.webhook_id] = received.at
        try:
            payload = verify(received, secret)
        except Exception as exc:
            bad_signature.append(
                f"{received.webhook_id} ({exc}; {len(received.body)} bytes, "
                f"headers {sorted(received.headers.items())})"
            )
            continue
        if not _matches(payload, received, snapshot):
            wrong_payload.append(f"{received.webhook_id} {payload.get('type')}")
    undelivered = [f"{e} {snapshot.events[e][1]}" for e in snapshot.events if e not in seen]
    delivered_terminal = {
        snapshot.events[e][0]
        for e in seen
        if e in snapshot.events and snapshot.events[e][1] in TERMINAL_EVENTS
    }
    no_terminal = [
        s.task_id for s in record if s.task_id is not None and s.task_id not in delivered_terminal
    ]
    if undelivered:
        verdict.problem(f"{len(undelivered)} event(s) never delivered", undelivered)
    if no_terminal:
        verdict.problem(
            f"{len(no_terminal)} acknowledged task(s) without a delivered terminal event",
            [str(t) for t in no_terminal],
        )
    if bad_signature:
        verdict.problem(f"{len(bad_signature)} delivery(ies) failed verification", bad_signature)
    if wrong_payload:
        verdict.problem(
            f"{len(wrong_payload)} delivery(ies) disagree with the event", wrong_payload
        )
    if snapshot.fanned_twice:
        verdict.problem(
            f"{len(snapshot.fanned_twice)} event(s) fanned out to the endpoint more than once",
            [f"{e} ×{n}" for e, n in snapshot.fanned_twice.items()],
        )
    for status in ("pending", "failed"):
        if snapshot.deliveries.get(status):
            verdict.problem(f"{snapshot.deliveries[status]} delivery(ies) left {status}")
    verdict.figures.update(
        webhook_events=len(snapshot.events),
        webhook_requests=len(receiver.snapshot()),
        webhook_deliveries_accepted=len(accepted),
        webhook_requests_cut_off=cut_off,
        webhook_duplicates=sum(n - 1 for n in seen.values()),
        # How long after the first arrival a duplicate came: about the deliverer's
        # take lease when an attempt's success was lost with its process or to the
        # outage; near zero would be two deliverers sending at once.
        webhook_duplicate_after_seconds=(
            {"min": min(gaps), "median": statistics.median(gaps), "max": max(gaps)} if gaps else "-"
        ),
    )


def _matches(payload: dict[str, Any], received: Received, snapshot: Snapshot) -> bool:
    stored = snapshot.events.get(received.webhook_id)
    if stored is None:
        return False
    task_id, kind = stored
    return bool(
        payload.get("id") == received.webhook_id
        and payload.get("type") == kind
        and (payload.get("data") or {}).get("id") == task_id
    )
