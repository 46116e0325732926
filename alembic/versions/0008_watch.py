"""Let the watcher hold a connection per mailbox: `watch` (on by default) and its lease.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox") as batch:
        batch.add_column(sa.Column("watch", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.add_column(
            sa.Column("watch_owner", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
        batch.add_column(
            sa.Column("watch_expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("mailbox") as batch:
        batch.drop_column("watch_expires_at")
        batch.drop_column("watch_owner")
        batch.drop_column("watch")
