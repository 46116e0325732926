"""Route of the connection check: parse, log in once, answer."""

from __future__ import annotations

from app.api.auth import full_key_router
from app.api.connection.schemas import ConnectionCheck, ConnectionCheckResult
from app.api.deps import IMAP_SESSION, SettingsDep
from app.api.limits import RATE_LIMIT
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    INVALID_INPUT,
    LOGIN_PROBLEMS,
    RATE_LIMITED,
    problem_responses,
)
from app.sync import check_connection, interactive_login_options

router = full_key_router("/v1/connection", "connection")


@router.post(
    "/check",
    operation_id="check_connection",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Try IMAP settings and credentials without saving them",
    response_model=ConnectionCheckResult,
    responses=problem_responses(INVALID_INPUT, *LOGIN_PROBLEMS, RATE_LIMITED, DATABASE_UNAVAILABLE),
)
def check_imap_connection(body: ConnectionCheck, settings: SettingsDep) -> ConnectionCheckResult:
    """Log in and list the folders; a problem's `code` says why it failed."""
    report = check_connection(
        body.imap.to_server(), body.auth.to_credential(), interactive_login_options(settings)
    )
    return ConnectionCheckResult.from_report(report)
