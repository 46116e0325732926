"""Give API keys a scope: `full` (every route, as before) or `status` (the health routes).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(
            sa.Column(
                "scope",
                sa.Enum("full", "status", name="apikeyscope", native_enum=False, length=32),
                server_default=sa.text("'full'"),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("scope")
