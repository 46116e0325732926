"""Notices for lasting failures, reconnect links, and OAuth flows bound to a mailbox.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox") as batch:
        for name in ("failing_since", "failing_noticed_at"):
            batch.add_column(sa.Column(name, sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table("notification") as batch:
        batch.add_column(
            sa.Column("reconnect_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True)
        )
    with op.batch_alter_table("oauth_flow") as batch:
        batch.add_column(sa.Column("mailbox_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_oauth_flow_mailbox_id_mailbox",
            "mailbox",
            ["mailbox_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_flow") as batch:
        batch.drop_constraint("fk_oauth_flow_mailbox_id_mailbox", type_="foreignkey")
        batch.drop_column("mailbox_id")
    with op.batch_alter_table("notification") as batch:
        batch.drop_column("reconnect_url")
    with op.batch_alter_table("mailbox") as batch:
        batch.drop_column("failing_noticed_at")
        batch.drop_column("failing_since")
