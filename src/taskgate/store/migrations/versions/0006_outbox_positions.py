"""outbox positions

The events' place in the outbox on PostgreSQL, where commit order is not the
order of any sequence (see ``taskgate.store.events``): a column, its unique index,
and the sequence that tells apart the events of one transaction. SQLite keeps
following the outbox by rowid and leaves the column NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 14:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE events_position_seq")
        # Events stored before this revision go first, in the order they were
        # written, below every position a later transaction can take (those start
        # at its transaction id << 20, and this transaction's id is smaller).
        op.execute(
            "UPDATE events SET position = numbered.position FROM ("
            " SELECT id, (pg_current_xact_id()::text::bigint << 20)"
            " - count(*) OVER () + row_number() OVER (ORDER BY created_at, task_id, seq) - 1"
            " AS position FROM events) AS numbered"
            " WHERE events.id = numbered.id"
        )
    with op.batch_alter_table("events", schema=None, recreate="never") as batch_op:
        batch_op.create_index(
            "ux_events_position",
            ["position"],
            unique=True,
            sqlite_where=sa.text("position IS NOT NULL"),
            postgresql_where=sa.text("position IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ux_events_position")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE events_position_seq")
    with op.batch_alter_table("events", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("position")
