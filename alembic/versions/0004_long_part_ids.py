"""Widen `attachment.part_id`: a message nested 33 levels deep has 65-character part ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attachment") as batch:
        batch.alter_column(
            "part_id",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=64),
            type_=sqlmodel.sql.sqltypes.AutoString(length=1024),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("attachment") as batch:
        batch.alter_column(
            "part_id",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=1024),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
