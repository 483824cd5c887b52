"""Table definitions. Times are integer microseconds since the epoch (UTC)."""

from __future__ import annotations

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
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

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
    Index("ux_events_task_seq", "task_id", "seq", unique=True),
    Index("ix_events_account", "account_id", "id"),
)

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

# The claim: queued tasks of one account in priority (higher first), then age, order.
Index(
    "ix_tasks_claim",
    tasks.c.account_id,
    tasks.c.priority.desc(),
    tasks.c.id,
    sqlite_where=text("status = 'queued'"),
    postgresql_where=text("status = 'queued'"),
)
