"""Queries on `oauth_flow`: start a flow, read it for the callback page, spend it once."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

from app.db.models import OAuthFlow
from app.db.repositories.results import rows_changed

# Expired flows are kept a day, so a late callback can still say "expired", then dropped.
_KEEP_EXPIRED = timedelta(days=1)


def add_flow(session: Session, flow: OAuthFlow, now: datetime) -> None:
    """Store a new flow and drop flows that expired long ago."""
    session.execute(
        sa.delete(OAuthFlow)
        .where(col(OAuthFlow.expires_at) < now - _KEEP_EXPIRED)
        .execution_options(synchronize_session=False)
    )
    session.add(flow)
    session.flush()


def get_flow(session: Session, state: str) -> OAuthFlow | None:
    return session.get(OAuthFlow, state)


def spend_flow(session: Session, state: str, provider: str, now: datetime) -> bool:
    """Mark the flow used; False when it is unknown, another provider's, expired or spent.

    One conditional UPDATE, so two exchanges of the same state cannot both win.
    """
    result = session.execute(
        sa.update(OAuthFlow)
        .where(
            col(OAuthFlow.state) == state,
            col(OAuthFlow.provider) == provider,
            col(OAuthFlow.used_at).is_(None),
            col(OAuthFlow.expires_at) > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(result) == 1
