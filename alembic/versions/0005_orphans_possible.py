"""Mark mailboxes that may hold emails no folder holds, so a sync looks for them only then.

Every mailbox starts marked: mail synced before the mark existed may include such
emails, and the first complete sync of each mailbox deletes them and clears it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox") as batch:
        batch.add_column(
            sa.Column("orphans_possible", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    mailbox = sa.table("mailbox", sa.column("orphans_possible", sa.Boolean()))
    op.execute(mailbox.update().values(orphans_possible=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox") as batch:
        batch.drop_column("orphans_possible")
