"""API-key authentication for every `/v1` route (`Authorization: Bearer <key>`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import select

from app.api.deps import EngineDep
from app.api.problems import ApiError
from app.db import session_scope
from app.db.models import ApiKey, utcnow
from app.security import api_key_prefix, verify_api_key

_LAST_USED_RESOLUTION = timedelta(minutes=1)
_bearer = HTTPBearer(auto_error=False, description="An API key from `imap-bridge apikey create`.")


def _unauthorized(detail: str) -> ApiError:
    return ApiError(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def require_api_key(
    engine: EngineDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """Accept a live API key; compare in constant time and never say which part failed.

    It reads (and, at most once a minute, stamps `last_used_at`) in a short
    transaction of its own, so concurrent requests with one key never queue
    behind a lock on its row.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("send Authorization: Bearer <api key>")
    prefix = api_key_prefix(credentials.credentials)
    with session_scope(engine) as session:
        key = (
            session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first() if prefix else None
        )
        if key is None or key.revoked_at is not None:
            verify_api_key(credentials.credentials, "0" * 64)  # same work whether or not it exists
            raise _unauthorized("the API key is not valid")
        if not verify_api_key(credentials.credentials, key.key_hash):
            raise _unauthorized("the API key is not valid")
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
            key.last_used_at = now
    return key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]
