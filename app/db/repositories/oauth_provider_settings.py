"""Queries on `oauth_provider_settings`: one row per configured provider, by name."""

from __future__ import annotations

from sqlmodel import Session, select

from app.db.models import OAuthProviderSettings


def get_provider_settings(session: Session, name: str) -> OAuthProviderSettings | None:
    return session.get(OAuthProviderSettings, name)


def all_provider_settings(session: Session) -> dict[str, OAuthProviderSettings]:
    return {row.name: row for row in session.exec(select(OAuthProviderSettings))}


def get_or_add_provider_settings(session: Session, name: str) -> OAuthProviderSettings:
    """Return the provider's row, creating an empty (disabled) one on first use."""
    row = session.get(OAuthProviderSettings, name)
    if row is None:
        row = OAuthProviderSettings(name=name)
        session.add(row)
    return row
