"""Queries on `api_key`: the keys operators make, list and revoke from the command line."""

from __future__ import annotations

from sqlmodel import Session, col, select

from app.db.models import ApiKey, ApiKeyScope
from app.security import generate_api_key


def create_api_key(
    session: Session, name: str, scope: ApiKeyScope = ApiKeyScope.FULL
) -> tuple[ApiKey, str]:
    """Store a new key's hash and return the row with the key, which exists nowhere else."""
    key, prefix, key_hash = generate_api_key()
    row = ApiKey(name=name, prefix=prefix, key_hash=key_hash, scope=scope)
    session.add(row)
    session.flush()
    return row, key


def list_api_keys(session: Session) -> list[ApiKey]:
    """Return every key, revoked ones included, oldest first."""
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))))


def has_live_api_key(session: Session) -> bool:
    """Say whether at least one key is not revoked."""
    live = select(ApiKey.id).where(col(ApiKey.revoked_at).is_(None)).limit(1)
    return session.exec(live).first() is not None


def is_live_api_key(session: Session, key_id: int) -> bool:
    """Say whether the key still exists and is not revoked."""
    live = select(ApiKey.id).where(ApiKey.id == key_id, col(ApiKey.revoked_at).is_(None))
    return session.exec(live).first() is not None


def get_api_key(session: Session, key_id: int) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def api_key_by_prefix(session: Session, prefix: str) -> ApiKey | None:
    """Return the key whose public prefix this is (revoked or not); None when there is none."""
    return session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
