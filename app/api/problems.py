"""RFC 9457 problem details: the one place that turns errors into HTTP answers.

Every error class of the lower layers has a stable `code`; the table below
gives it an HTTP status and a title. Anything not in the table is a bug: the
client gets a generic 500 problem and the traceback goes to the log, never to
the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db.engine import is_unavailable
from app.imap import errors as imap
from app.notify import errors as notify
from app.oauth import errors as oauth
from app.sync import errors as sync

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One bad input field: a dotted path into the request, and what is wrong with it."""

    field: str
    message: str


class Problem(BaseModel):
    """An error answer (RFC 9457); `code` is stable and what clients should branch on."""

    type: str
    title: str
    status: int
    detail: str | None = None
    code: str
    errors: list[FieldError] = []


class ApiError(Exception):
    """An error raised by the HTTP layer itself (not found, conflict, unauthorized...)."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.headers = headers


def not_found(what: str, identifier: object) -> ApiError:
    return ApiError(404, "not_found", "Not found", f"{what} {identifier} does not exist")


# Error class -> (HTTP status, title). The most specific class wins (MRO order).
STATUS_OF: dict[type[Exception], tuple[int, str]] = {
    imap.AuthenticationFailed: (422, "The IMAP server refused the credentials"),
    imap.BlockedHost: (422, "The IMAP host is not allowed"),
    imap.TlsFailed: (502, "TLS with the IMAP server failed"),
    imap.FolderNotFound: (404, "The folder does not exist on the server"),
    imap.ProtocolError: (502, "The IMAP server answered with an error"),
    imap.Unreachable: (502, "The IMAP server cannot be reached"),
    imap.TimedOut: (504, "The IMAP server did not answer in time"),
    imap.ServerUnavailable: (503, "The IMAP server cannot serve the request now"),
    imap.NetworkError: (502, "The connection to the IMAP server failed"),
    sync.MailboxNotFoundError: (404, "Not found"),
    sync.EmailNotFoundError: (404, "Not found"),
    sync.AttachmentNotFoundError: (404, "Not found"),
    sync.MessageGoneError: (404, "The message is no longer on the server"),
    sync.SyncError: (409, "The request conflicts with the mailbox's state"),
    notify.WebhookEndpointNotFoundError: (404, "Not found"),
    notify.NotificationNotFoundError: (404, "Not found"),
    notify.WebhookUrlRefusedError: (422, "The webhook URL is not allowed"),
    oauth.UnknownProviderError: (404, "Not found"),
    oauth.ProviderDisabledError: (409, "The OAuth provider is not enabled"),
    oauth.InvalidProviderSettingsError: (422, "The provider settings are invalid"),
    oauth.InvalidClientError: (422, "The provider refused the client id or secret"),
    oauth.InvalidGrantError: (400, "The provider refused the code or token"),
    oauth.FlowStateError: (400, "The OAuth state is not valid"),
    oauth.ProviderUnavailableError: (502, "The OAuth provider cannot be reached"),
    oauth.OAuthError: (502, "The OAuth provider answered with an error"),
}

# Codes that describe an input the client sent and can fix.
_CLIENT_FIXABLE = {"auth_failed", "blocked_host"}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"/problems/{code}",
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=errors or [],
    )
    return JSONResponse(
        problem.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _field_path(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(location[-1] if location else "")


def validation_errors(errors: list[Any]) -> list[FieldError]:
    """Name each bad field the way the client wrote it (`imap.port`, `limit`)."""
    return [
        FieldError(field=_field_path(tuple(error.get("loc", ()))), message=error.get("msg", ""))
        for error in errors
    ]


def _for_known_error(exc: Exception) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return None


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, with problem+json."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(
            exc.status, exc.code, exc.title, exc.detail, errors=exc.errors, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def _invalid_request(
        _request: Request, exc: RequestValidationError | ValidationError
    ) -> JSONResponse:
        errors = validation_errors(list(exc.errors()))
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem_response(
            422, "validation_error", "The request is invalid", detail, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(imap.ImapError)
    @app.exception_handler(sync.SyncError)
    @app.exception_handler(oauth.OAuthError)
    @app.exception_handler(notify.NotifyError)
    async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
        status, title = _for_known_error(exc) or (500, "Internal error")
        code = getattr(exc, "code", "internal_error")
        field = getattr(exc, "field", None) or ("auth" if code == "auth_failed" else "imap.host")
        fixable = code in _CLIENT_FIXABLE or getattr(exc, "field", None) is not None
        errors = [FieldError(field=field, message=str(exc))] if fixable else None
        return problem_response(status, code, title, str(exc), errors=errors)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(sync.DatabaseUnavailableError)
    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and not is_unavailable(exc):
            return await _unexpected(request, exc)  # a statement failed: a bug, not an outage
        log.error("api.database_unavailable", exc_info=exc)
        return problem_response(
            503,
            sync.DatabaseUnavailableError.code,
            "The database is not available",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unexpected_error", exc_info=exc)
        return problem_response(500, "internal_error", "Internal error")
