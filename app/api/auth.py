"""API-key authentication for every `/v1` route (`Authorization: Bearer <key>`).

A key of scope `full` opens every route; one of scope `status` (the status
page's) opens only the health routes, which depend on `require_status_key`;
everywhere else it gets 403 `insufficient_scope`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep
from app.api.problems import API_KEY_PROBLEMS, ApiError
from app.db import session_scope
from app.db.models import ApiKey, ApiKeyScope, utcnow
from app.db.repositories.api_keys import api_key_by_prefix
from app.security import api_key_prefix, hash_api_key, verify_api_key

_LAST_USED_RESOLUTION = timedelta(minutes=1)
_bearer = HTTPBearer(auto_error=False, description="An API key from `imap-bridge apikey create`.")


def _unauthorized(detail: str) -> ApiError:
    return ApiError(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


class VerifiedKeys:
    """API keys found live within the last second, by the SHA-256 of the key presented.

    Every `/v1` request would otherwise open a transaction of its own to look
    its key up, a third of the work of a short request. The price: a revoked
    key goes on working for up to `seconds` in a process that has just seen it.
    Only live keys are kept, so a wrong key costs a lookup every time.
    """

    def __init__(self, seconds: float = 1.0, size: int = 1024) -> None:
        self.seconds = seconds
        self.size = size
        self._keys: dict[str, tuple[ApiKey, float]] = {}

    def get(self, digest: str) -> ApiKey | None:
        found = self._keys.get(digest)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def put(self, digest: str, key: ApiKey) -> None:
        if len(self._keys) >= self.size:
            self._keys.clear()  # a burst of distinct keys: start over rather than track ages
        self._keys[digest] = (key, time.monotonic() + self.seconds)


async def verified_api_key(
    request: Request,
    engine: EngineDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """Accept a live API key; compare in constant time and never say which part failed.

    A key verified within the last second is taken from `VerifiedKeys`, on the
    event loop; any other is looked up in the thread pool.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("send Authorization: Bearer <api key>")
    verified: VerifiedKeys = request.app.state.verified_keys
    digest = hash_api_key(credentials.credentials)
    key = verified.get(digest)
    if key is None:
        key = await run_in_threadpool(_live_key, engine, credentials.credentials)
        verified.put(digest, key)
    return key


def _live_key(engine: Engine, presented: str) -> ApiKey:
    """Look the key up and check it.

    It reads (and, at most once a minute, stamps `last_used_at`) in a short
    transaction of its own, so concurrent requests with one key never queue
    behind a lock on its row.
    """
    prefix = api_key_prefix(presented)
    with session_scope(engine) as session:
        key = api_key_by_prefix(session, prefix) if prefix else None
        if key is None or key.revoked_at is not None:
            verify_api_key(presented, "0" * 64)  # same work whether or not it exists
            raise _unauthorized("the API key is not valid")
        if not verify_api_key(presented, key.key_hash):
            raise _unauthorized("the API key is not valid")
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
            key.last_used_at = now
    return key


async def require_api_key(key: Annotated[ApiKey, Depends(verified_api_key)]) -> ApiKey:
    """Accept a live key of scope `full`: a status key opens the health routes alone."""
    if key.scope is not ApiKeyScope.FULL:
        raise ApiError(
            403,
            "insufficient_scope",
            "Forbidden",
            "this is a status key: it opens the health routes only",
        )
    return key


def full_key_router(prefix: str, tag: str) -> APIRouter:
    """Return a router whose every route a key of scope `full` opens (401/403 documented)."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        dependencies=[Depends(require_api_key)],
        responses=API_KEY_PROBLEMS,
    )


async def require_status_key(key: Annotated[ApiKey, Depends(verified_api_key)]) -> ApiKey:
    """Accept any live key: the health routes are read-only, and the status page's key is one."""
    return key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]
