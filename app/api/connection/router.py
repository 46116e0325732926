"""Route of the connection check: parse, log in once, answer."""

from __future__ import annotations

from app.api.auth import full_key_router
from app.api.connection.schemas import ConnectionCheck, ConnectionCheckResult, PreviewFlag
from app.api.deps import IMAP_SESSION, SettingsDep
from app.api.limits import RATE_LIMIT
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    INVALID_INPUT,
    LOGIN_PROBLEMS,
    RATE_LIMITED,
    problem_responses,
)
from app.sync import check_connection, interactive_login_options, new_mailbox_window_start

router = full_key_router("/v1/connection", "connection")


@router.post(
    "/check",
    operation_id="check_connection",
    dependencies=[RATE_LIMIT, IMAP_SESSION],
    summary="Try IMAP settings and credentials without saving them; preview a sync's cost",
    response_model=ConnectionCheckResult,
    responses=problem_responses(INVALID_INPUT, *LOGIN_PROBLEMS, RATE_LIMITED, DATABASE_UNAVAILABLE),
)
def check_imap_connection(
    body: ConnectionCheck, settings: SettingsDep, preview: PreviewFlag = True
) -> ConnectionCheckResult:
    """Log in, list the folders, count what a sync would fetch; a problem's `code` says why not."""
    report = check_connection(
        body.imap.to_server(),
        body.auth.to_credential(),
        interactive_login_options(settings),
        preview_since=new_mailbox_window_start(settings) if preview else None,
    )
    return ConnectionCheckResult.from_report(report)
