"""Track which events the dispatcher fanned out; room for per-recipient channels.

`event.dispatched_at` marks an event whose `event_delivery` rows exist, so
the dispatcher finds new events with one indexed query. `event_delivery.channel`
grows to 300 characters: `email:<user id>` holds a CRM user id of up to 255.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event") as batch_op:
        batch_op.add_column(
            sa.Column("dispatched_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_event_dispatched_at"), ["dispatched_at"])
    with op.batch_alter_table("event_delivery") as batch_op:
        batch_op.alter_column(
            "channel",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=100),
            type_=sqlmodel.sql.sqltypes.AutoString(length=300),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("event_delivery") as batch_op:
        batch_op.alter_column(
            "channel",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=300),
            type_=sqlmodel.sql.sqltypes.AutoString(length=100),
            existing_nullable=False,
        )
    with op.batch_alter_table("event") as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_dispatched_at"))
        batch_op.drop_column("dispatched_at")
