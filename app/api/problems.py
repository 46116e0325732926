"""RFC 9457 problem details: the one place that turns errors into HTTP answers.

Every error class of the lower layers has a stable `code`; the table below
gives it an HTTP status and a title. Anything not in the table is a bug: the
client gets a generic 500 problem and the traceback goes to the log, never to
the client.

The OpenAPI document declares the same answers: routes build their
`responses=` with `problem_responses` from the ProblemDocs below, and
`document_problems` files them all under `application/problem+json`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app import connection_budget as budget
from app import imap, sync
from app.db.engine import is_unavailable
from app.job_queue import QueueUnavailableError
from app.notify import errors as notify
from app.oauth import errors as oauth

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER_SECONDS = 5
QUEUE_RETRY_AFTER_SECONDS = 10


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
    imap.FolderReadOnly: (409, "The server lets the mailbox only read the folder"),
    imap.ProtocolError: (502, "The IMAP server answered with an error"),
    imap.Unreachable: (502, "The IMAP server cannot be reached"),
    imap.TimedOut: (504, "The IMAP server did not answer in time"),
    imap.ServerUnavailable: (503, "The IMAP server cannot serve the request now"),
    imap.NetworkError: (502, "The connection to the IMAP server failed"),
    sync.MailboxNotFoundError: (404, "Not found"),
    sync.EmailNotFoundError: (404, "Not found"),
    sync.AttachmentNotFoundError: (404, "Not found"),
    sync.MessageGoneError: (404, "The message is no longer on the server"),
    sync.CredentialsRequiredError: (422, "New server settings need the credentials too"),
    sync.ProviderHostRequiredError: (422, "An OAuth mailbox stays on its provider's server"),
    sync.PlaintextRefusedError: (422, "Plain-text IMAP is not allowed"),
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
    oauth.OriginNotAllowedError: (422, "The origin is not allowed to run OAuth flows"),
    oauth.AccountUnknownError: (502, "The OAuth provider did not name the account"),
    oauth.ProviderUnavailableError: (502, "The OAuth provider cannot be reached"),
    oauth.OAuthError: (502, "The OAuth provider answered with an error"),
    QueueUnavailableError: (503, "The job queue is not available"),
    budget.NoConnectionSlotError: (503, "Every connection slot to the IMAP server is in use"),
    budget.ConnectionBudgetUnavailableError: (503, "The connection budget is not available"),
}
# Errors that pass: the client may try again after this many seconds (`Retry-After`).
RETRY_AFTER_OF: dict[type[Exception], int] = {QueueUnavailableError: QUEUE_RETRY_AFTER_SECONDS}

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
    """Name each bad field the way the client wrote it (`imap.port`, `limit`); a body that
    is not JSON is `body` (FastAPI locates it at the character offset)."""
    return [
        FieldError(
            field="body"
            if error.get("type") == "json_invalid"
            else _field_path(tuple(error.get("loc", ()))),
            message=error.get("msg", ""),
        )
        for error in errors
    ]


def _for_known_error(exc: Exception) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return None


# Errors Starlette and FastAPI raise themselves: 400 is a body FastAPI could not decode.
_HTTP_ERROR_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@cache
def _path_pattern(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def allowed_methods(request: Request) -> str | None:
    """The `Allow` of a 405 (RFC 9110 15.5.6): the methods the OpenAPI document lists for
    this path, whichever of its routes serves them.

    Starlette's own names only the first route matching the path, while GET and POST
    of one path are two routes here. None for a path the document does not describe.
    """
    document: dict[str, Any] = request.app.openapi()
    methods = {
        method.upper()
        for template, path_item in document["paths"].items()
        if _path_pattern(template).match(request.url.path)
        for method in path_item
        if method in HTTP_METHODS
    }
    return ", ".join(sorted(methods)) or None


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
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else {}
        allowed = allowed_methods(request) if exc.status_code == 405 else None
        if allowed is not None:
            headers["Allow"] = allowed
        return problem_response(exc.status_code, code, str(exc.detail), headers=headers or None)

    @app.exception_handler(imap.ImapError)
    @app.exception_handler(sync.SyncError)
    @app.exception_handler(oauth.OAuthError)
    @app.exception_handler(notify.NotifyError)
    @app.exception_handler(QueueUnavailableError)
    async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
        status, title = _for_known_error(exc) or (500, "Internal error")
        retry_after = RETRY_AFTER_OF.get(type(exc))
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        code = getattr(exc, "code", "internal_error")
        field = getattr(exc, "field", None) or ("auth" if code == "auth_failed" else "imap.host")
        fixable = code in _CLIENT_FIXABLE or getattr(exc, "field", None) is not None
        errors = [FieldError(field=field, message=str(exc))] if fixable else None
        return problem_response(status, code, title, str(exc), errors=errors, headers=headers)

    @app.exception_handler(budget.ConnectionBudgetError)
    async def _budget_error(_request: Request, exc: budget.ConnectionBudgetError) -> JSONResponse:
        status, title = _for_known_error(exc) or (503, "No IMAP connection can be opened now")
        return problem_response(
            status,
            exc.code,
            title,
            str(exc),
            headers={"Retry-After": str(exc.retry_after_seconds)},
        )

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
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unexpected_error", exc_info=exc)
        return problem_response(500, "internal_error", "Internal error")


# -- how the OpenAPI document declares problems ----------------------------------------------

PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}


@dataclass(frozen=True)
class ProblemDoc:
    """A problem answer as an operation documents it: its status, when, and Retry-After."""

    status: int
    description: str
    retry_after: bool = False


UNAUTHORIZED = ProblemDoc(401, "`unauthorized`: no API key, or one that is not valid")
WRONG_SCOPE = ProblemDoc(
    403, "`insufficient_scope`: a status key (`--scope status`), which opens the health routes only"
)
MALFORMED_BODY = ProblemDoc(400, "`malformed_body`: the body cannot be decoded")
BODY_TOO_LARGE = ProblemDoc(413, "`payload_too_large`: the body is over API_MAX_BODY_BYTES")
INVALID_INPUT = ProblemDoc(422, "`validation_error`: invalid input, `errors` names each field")
RATE_LIMITED = ProblemDoc(
    429,
    "`rate_limited`: this API key made API_RATE_LIMIT_PER_MINUTE calls to this operation"
    " within a minute",
    retry_after=True,
)
TOO_MANY_STREAMS = ProblemDoc(
    429,
    "`too_many_streams`: this API key holds SSE_MAX_STREAMS_PER_KEY open streams already",
    retry_after=True,
)
INTERNAL_ERROR = ProblemDoc(500, "`internal_error`: an unexpected error, logged with its trace")
DATABASE_UNAVAILABLE = ProblemDoc(
    503, "`database_unavailable`: the database does not answer", retry_after=True
)


# Any route that talks to an IMAP server; a login adds the answers about what the client sent.
IMAP_PROBLEMS = (
    ProblemDoc(
        502,
        "`tls_error`, `unreachable`, `response_too_large` or another failure of the IMAP server",
    ),
    ProblemDoc(503, "`server_unavailable`: the IMAP server cannot serve the request now"),
    ProblemDoc(
        503,
        "`imap_busy`: this API process already talks to API_IMAP_CONCURRENCY IMAP servers",
        retry_after=True,
    ),
    ProblemDoc(
        503,
        "`waiting_for_connection_slot`: IMAP_MAX_CONNECTIONS_PER_HOST sessions to the server, or"
        " IMAP_MAX_CONNECTIONS_PER_ACCOUNT to the account, are open (every process counted)",
        retry_after=True,
    ),
    ProblemDoc(
        503,
        "`connection_budget_unavailable`: Redis, which counts the open IMAP sessions, does not"
        " answer",
        retry_after=True,
    ),
    ProblemDoc(504, "`timeout`: the IMAP server did not answer in time"),
)
LOGIN_PROBLEMS = (
    ProblemDoc(
        422,
        "`auth_failed`, `blocked_host` or `plaintext_not_allowed` (IMAP_ALLOW_PLAINTEXT is off):"
        " fix the field named",
    ),
    *IMAP_PROBLEMS,
)


def missing(what: str) -> ProblemDoc:
    """The 404 of an operation whose path names `what`, which may not exist."""
    return ProblemDoc(404, f"`not_found`: no such {what}")


def problem_responses(*answers: ProblemDoc) -> dict[int | str, dict[str, Any]]:
    """Build a `responses=` declaring problem answers; answers of one status share an entry
    (a Markdown list of them).

    FastAPI lets a route's entry for a status replace its router's, so a `/v1`
    route that declares its own 503 lists DATABASE_UNAVAILABLE again.
    """
    alike: dict[int, list[ProblemDoc]] = {}
    for answer in answers:
        alike.setdefault(answer.status, []).append(answer)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, docs in alike.items():
        description = "\n".join(f"- {doc.description}" for doc in docs)
        if len(docs) == 1:
            description = docs[0].description
        response: dict[str, Any] = {"model": Problem, "description": description}
        if any(doc.retry_after for doc in docs):
            response["headers"] = RETRY_AFTER_HEADER
        responses[status] = response
    return responses


# Every `/v1` route checks the API key, in the database, before anything else.
API_KEY_PROBLEMS = problem_responses(UNAUTHORIZED, WRONG_SCOPE, DATABASE_UNAVAILABLE)
# The health routes, which a status key opens as well.
STATUS_KEY_PROBLEMS = problem_responses(UNAUTHORIZED, DATABASE_UNAVAILABLE)


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document FastAPI generated say what the handlers send, in place.

    FastAPI files a `Problem` answer under the route's own media type
    (`application/json`, `text/html`, `text/event-stream`); every problem goes
    out as `application/problem+json`. And any operation that takes a body can
    meet one FastAPI cannot decode (400) or one over API_MAX_BODY_BYTES, which
    `BodySizeLimit` refuses (413): each such operation documents both.
    """
    for path_item in document["paths"].values():
        for operation in path_item.values():
            responses: dict[str, Any] = operation["responses"]
            if "requestBody" in operation:
                for answer in (MALFORMED_BODY, BODY_TOO_LARGE):
                    responses.setdefault(str(answer.status), _rendered(answer))
            for response in responses.values():
                content: dict[str, Any] = response.get("content", {})
                for media_type, media in list(content.items()):
                    if media.get("schema") == {"$ref": PROBLEM_SCHEMA_REF}:
                        content[PROBLEM_MEDIA_TYPE] = content.pop(media_type)
    return document


def _rendered(answer: ProblemDoc) -> dict[str, Any]:
    """The document's form of an answer (what FastAPI makes of `problem_responses`)."""
    declared = problem_responses(answer)[answer.status]
    del declared["model"]
    return declared | {"content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}}}
