"""Table definitions. Times are integer microseconds since the epoch (UTC)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()


def status_is(column: Column[Any], status: str) -> ColumnElement[bool]:
    """``column = 'status'`` with the status written into the statement, not bound.

    The partial indexes hold the rows of one status (``WHERE status = 'queued'``),
    and PostgreSQL uses such an index only where the query names that constant. A
    bound status is one only in a custom plan: once a statement is prepared (the
    driver does so after a few runs) and the server settles on its generic plan,
    the index is out of reach, and a read of an account's queue scans every task
    the account ever had.
    """
    if "'" in status:
        raise ValueError(f"not a status: {status!r}")
    return column == literal_column(f"'{status}'", column.type)


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("concurrency_limit", Integer, nullable=False),
    # Tasks of this account in status running; changed only in the transactions
    # that move a task into or out of running, so it is exact.
    Column("running", Integer, nullable=False, server_default=text("0")),
    # Round-robin cursor of the claim: the account claimed longest ago goes first.
    Column("last_claim_at", BigInteger, nullable=True),
    # Credits, in millicredits, kept in step with the ledger by the transactions
    # that write it: available = grants − charged − open reservations; reserved =
    # open reservations; charged = all charges ever. ``taskgate doctor`` checks
    # them against the ledger.
    Column("credits_available", BigInteger, nullable=False, server_default=text("0")),
    Column("credits_reserved", BigInteger, nullable=False, server_default=text("0")),
    Column("credits_charged", BigInteger, nullable=False, server_default=text("0")),
    # Rate-limit overrides in ``limits`` notation; NULL means the server's default.
    Column("rate_limit_reads", String(100), nullable=True),
    Column("rate_limit_writes", String(100), nullable=True),
    # Signs the account's per-task callbacks (made on first use).
    Column("callback_secret", String(100), nullable=True),
    # How long the account's outputs live, in seconds; NULL means the server's default.
    Column("output_retention_seconds", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("running >= 0", name="ck_accounts_running"),
    CheckConstraint("concurrency_limit >= 1", name="ck_accounts_concurrency"),
    CheckConstraint("credits_available >= 0", name="ck_accounts_credits_available"),
    CheckConstraint("credits_reserved >= 0", name="ck_accounts_credits_reserved"),
    CheckConstraint("credits_charged >= 0", name="ck_accounts_credits_charged"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("prefix", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_api_keys_account", "account_id"),
    Index("ix_api_keys_prefix", "prefix"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("workflow", String(100), nullable=False),
    Column("workflow_version", String(40), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("input", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("out_task_id", String(255), nullable=True),
    # Fingerprint of the submission, to tell a retried request from a reused key.
    Column("request_hash", String(64), nullable=False),
    Column("callback_url", Text, nullable=True),
    Column("callback_events", JSON, nullable=True),
    # The per-task callback's delivery, kept by the deliverer: pending, delivered
    # or failed (NULL without a callback_url), attempts made, last success and error.
    Column("callback_status", String(16), nullable=True),
    Column("callback_attempts", Integer, nullable=False, server_default=text("0")),
    Column("callback_delivered_at", BigInteger, nullable=True),
    Column("callback_last_error", String(300), nullable=True),
    Column("progress_percent", Float, nullable=False, server_default=text("0")),
    Column("progress_stage", String(200), nullable=True),
    Column("progress_message", Text, nullable=True),
    Column("output", JSON, nullable=True),
    Column("warnings", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("usage", JSON, nullable=True),
    Column("estimated_credits", BigInteger, nullable=False, server_default=text("0")),
    # Held from submit until the task is terminal, then split into charged and
    # refunded (both NULL until then).
    Column("reserved_credits", BigInteger, nullable=False, server_default=text("0")),
    Column("charged_credits", BigInteger, nullable=True),
    Column("refunded_credits", BigInteger, nullable=True),
    Column("expected_seconds", Float, nullable=False),
    Column("timeout_seconds", Float, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    # The task is not claimed before this time (retry backoff).
    Column("run_at", BigInteger, nullable=False),
    # Fencing token together with attempts: set at claim, checked by every
    # completion, renewal and recovery.
    Column("worker_id", String(40), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("cancel_requested_at", BigInteger, nullable=True),
    # Sequence number of the task's latest event.
    Column("event_seq", Integer, nullable=False, server_default=text("0")),
    CheckConstraint(
        "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
        name="ck_tasks_status",
    ),
    Index(
        "ix_tasks_lease",
        "lease_expires_at",
        sqlite_where=text("status = 'running'"),
        postgresql_where=text("status = 'running'"),
    ),
    Index("ix_tasks_account_id", "account_id", "id"),
    Index(
        "ux_tasks_out_task_id",
        "account_id",
        "out_task_id",
        unique=True,
        sqlite_where=text("out_task_id IS NOT NULL"),
        postgresql_where=text("out_task_id IS NOT NULL"),
    ),
)

events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("task_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    # Per-task sequence number, from 1.
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The task's row as it stood after the change.
    Column("data", JSON, nullable=False),
    # The event's place in the outbox on PostgreSQL (see ``store/events.py``); NULL
    # on SQLite, where the rowid is the place.
    Column("position", BigInteger, nullable=True),
    Index("ux_events_task_seq", "task_id", "seq", unique=True),
    Index("ix_events_account", "account_id", "id"),
    Index(
        "ux_events_position",
        "position",
        unique=True,
        sqlite_where=text("position IS NOT NULL"),
        postgresql_where=text("position IS NOT NULL"),
    ),
)

# Keeps apart the outbox positions of one transaction's events (PostgreSQL only;
# see ``store/events.py``).
events_position_seq = Sequence("events_position_seq", metadata=metadata)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("task_id", String(40), nullable=True),
    Column("kind", String(16), nullable=False),
    # Millicredits; always positive, the kind gives the direction.
    Column("amount", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("note", Text, nullable=True),
    CheckConstraint("kind IN ('grant', 'reserve', 'settle', 'refund')", name="ck_ledger_kind"),
    CheckConstraint("amount >= 0", name="ck_ledger_amount"),
    Index("ix_ledger_account", "account_id", "id"),
    Index("ix_ledger_task", "task_id"),
    # Charges of an account in a period (GET /v1/usage).
    Index("ix_ledger_account_kind", "account_id", "kind", "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", String(500), nullable=True),
    # Event types delivered to the endpoint.
    Column("enabled_events", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    # Why the server disabled it (None when enabled, or disabled by its owner).
    Column("disabled_reason", String(200), nullable=True),
    Column("secret", String(100), nullable=False),
    # After a rotation, deliveries are signed with both secrets until this time.
    Column("previous_secret", String(100), nullable=True),
    Column("previous_secret_expires_at", BigInteger, nullable=True),
    # Start of the current run of failed deliveries (None while it succeeds).
    Column("failing_since", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint("status IN ('enabled', 'disabled')", name="ck_webhook_endpoints_status"),
    Index("ix_webhook_endpoints_account", "account_id", "id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    # Where it goes: a webhook endpoint's id, or ``callback`` for a task's callback_url.
    Column("target", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=True),
    Column("task_id", String(40), nullable=True),
    Column("event_id", String(40), nullable=False),
    Column("event_type", String(40), nullable=False),
    # The event's outbox position: a task's deliveries to one target go in this order.
    Column("position", BigInteger, nullable=True),
    # The callback URL (endpoints are looked up at each attempt, so an edit applies).
    Column("url", Text, nullable=True),
    # The exact body sent, the same bytes on every attempt.
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    # Failed attempts since it was (re)queued: the place in the retry schedule.
    Column("failures", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", BigInteger, nullable=True),
    # A deliverer that took it holds it until then (a lost deliverer's take expires).
    Column("leased_until", BigInteger, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(300), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    CheckConstraint(
        "status IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"
    ),
    UniqueConstraint("event_id", "target", name="uq_webhook_deliveries_event_target"),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    # Per target and task, the earliest pending delivery goes first.
    Index(
        "ix_webhook_deliveries_lane",
        "target",
        "task_id",
        "position",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    Index("ix_webhook_deliveries_task", "task_id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("delivery_id", String(40), ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempted_at", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("error", String(300), nullable=True),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)

# How far each reader of the outbox has got (the deliverer's fan-out).
outbox_cursors = Table(
    "outbox_cursors",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# Duties that one process of the deployment runs at a time (the maintenance loop):
# held by ``holder`` until ``expires_at`` unless renewed; taken over once expired.
# ``term`` counts the holders the duty has had.
leader_leases = Table(
    "leader_leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("term", BigInteger, nullable=False),
    Column("elected_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# Uploaded inputs and produced outputs. The blob is at ``files/<id>`` in the storage;
# ``expired_at`` is set when retention deleted it (the row stays, so the file's
# content answers 410 rather than 404).
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(100), nullable=False),
    # image, audio, video, or file (an output of another type).
    Column("kind", String(16), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("duration", Float, nullable=True),
    # The task that produced an output.
    Column("task_id", String(40), nullable=True),
    # Where an input given as a URL was fetched from.
    Column("source_url", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("expired_at", BigInteger, nullable=True),
    CheckConstraint("purpose IN ('input', 'output')", name="ck_files_purpose"),
    Index("ix_files_account", "account_id", "id"),
    Index("ix_files_task", "task_id"),
    Index(
        "ix_files_expires",
        "expires_at",
        sqlite_where=text("expired_at IS NULL"),
        postgresql_where=text("expired_at IS NULL"),
    ),
)

# The files a task's input refers to (by id, or by a URL fetched at submit): they
# live at least until the task is terminal.
task_inputs = Table(
    "task_inputs",
    metadata,
    Column("task_id", String(40), primary_key=True),
    # The value in the task's input: a file id or a URL.
    Column("ref", String(2048), primary_key=True),
    Column("file_id", String(40), ForeignKey("files.id"), nullable=False),
    Index("ix_task_inputs_file", "file_id"),
)

# The claim: queued tasks of one account in priority (higher first), then age, order.
Index(
    "ix_tasks_claim",
    tasks.c.account_id,
    tasks.c.priority.desc(),
    tasks.c.id,
    sqlite_where=text("status = 'queued'"),
    postgresql_where=text("status = 'queued'"),
)
