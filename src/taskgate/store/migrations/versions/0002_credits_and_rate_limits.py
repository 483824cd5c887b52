"""credits and rate limits

Account credit counters (kept in step with the ledger), per-task reservations,
per-account rate-limit overrides, and an index for charges by period.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 10:31:32.516751
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "credits_available", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "credits_reserved", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "credits_charged", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("rate_limit_reads", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("rate_limit_writes", sa.String(length=100), nullable=True))
        batch_op.create_check_constraint("ck_accounts_credits_available", "credits_available >= 0")
        batch_op.create_check_constraint("ck_accounts_credits_reserved", "credits_reserved >= 0")
        batch_op.create_check_constraint("ck_accounts_credits_charged", "credits_charged >= 0")

    with op.batch_alter_table("ledger", schema=None, recreate="never") as batch_op:
        batch_op.create_index(
            "ix_ledger_account_kind", ["account_id", "kind", "created_at"], unique=False
        )

    # Plain ALTER TABLE: a rebuild would lose the claim index's descending column.
    with op.batch_alter_table("tasks", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column(
                "reserved_credits", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("charged_credits", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("refunded_credits", sa.BigInteger(), nullable=True))

    # Before this revision the ledger held grants only, and no task held a
    # reservation: what an account has available is what it was granted.
    op.execute(
        "UPDATE accounts SET credits_available = COALESCE("
        "(SELECT SUM(amount) FROM ledger WHERE ledger.account_id = accounts.id"
        " AND ledger.kind = 'grant'), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("refunded_credits")
        batch_op.drop_column("charged_credits")
        batch_op.drop_column("reserved_credits")

    with op.batch_alter_table("ledger", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ix_ledger_account_kind")

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint("ck_accounts_credits_charged", type_="check")
        batch_op.drop_constraint("ck_accounts_credits_reserved", type_="check")
        batch_op.drop_constraint("ck_accounts_credits_available", type_="check")
        batch_op.drop_column("rate_limit_writes")
        batch_op.drop_column("rate_limit_reads")
        batch_op.drop_column("credits_charged")
        batch_op.drop_column("credits_reserved")
        batch_op.drop_column("credits_available")
