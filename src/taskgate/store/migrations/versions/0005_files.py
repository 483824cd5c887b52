"""files

Uploaded inputs and produced outputs, the inputs each task refers to, and the
per-account output retention.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("output_retention_seconds", sa.BigInteger(), nullable=True))

    op.create_table(
        "files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("expired_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("purpose IN ('input', 'output')", name="ck_files_purpose"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index("ix_files_account", ["account_id", "id"], unique=False)
        batch_op.create_index("ix_files_task", ["task_id"], unique=False)
        batch_op.create_index(
            "ix_files_expires",
            ["expires_at"],
            unique=False,
            sqlite_where=sa.text("expired_at IS NULL"),
            postgresql_where=sa.text("expired_at IS NULL"),
        )

    op.create_table(
        "task_inputs",
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("ref", sa.String(length=2048), nullable=False),
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"]),
        sa.PrimaryKeyConstraint("task_id", "ref"),
    )
    with op.batch_alter_table("task_inputs", schema=None) as batch_op:
        batch_op.create_index("ix_task_inputs_file", ["file_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_inputs", schema=None) as batch_op:
        batch_op.drop_index("ix_task_inputs_file")
    op.drop_table("task_inputs")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_expires")
        batch_op.drop_index("ix_files_task")
        batch_op.drop_index("ix_files_account")
    op.drop_table("files")
    with op.batch_alter_table("accounts", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("output_retention_seconds")
