"""What mailbox health needs: API key scopes, and an index of the open sync runs.

A key's scope is `full` (every route, as before) or `status` (the health routes
alone). The partial index holds only queued and running runs, so the fleet's
health finds each mailbox's open runs without reading its whole history.

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

    op.create_index(
        "ix_sync_run_open",
        "sync_run",
        ["mailbox_id"],
        unique=False,
        sqlite_where=sa.text("status IN ('queued', 'running')"),
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_run_open", table_name="sync_run")
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("scope")
