"""IMAP settings and credentials as the API takes them, and the connection check's answer.

The mailbox routes take the same `imap` and `auth` objects, so a CRM builds
one form for "test connection" and "save".
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    Strict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from app.api.request_models import WHOLE_NUMBER, RequestModel, WholeNumber
from app.imap import FolderNode, FolderType, ImapConfig, ImapPassword, Security
from app.oauth.registry import installed_providers
from app.sync import ConnectionReport, Credential, FolderPreview, ServerSettings, SyncPreview

_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}

PreviewFlag = Annotated[
    bool,
    Query(
        description="false: only log in and list the folders, without counting what a sync"
        " would fetch (faster on large accounts)."
    ),
]


class ImapSettings(RequestModel):
    """Where the IMAP server is and how to talk to it."""

    host: str = Field(min_length=1, max_length=253, examples=["imap.example.com"])
    port: WholeNumber = Field(default=993, ge=1, le=65535)
    # Read by its value: strict mode takes only the member itself from a decoded body.
    security: Annotated[Security, Strict(False)] = Field(
        default=Security.SSL, description="`ssl`: TLS from the start; `starttls`: upgrade; `none`."
    )
    username: str = Field(min_length=1, max_length=320)
    tls_verify: bool = Field(
        default=True, description="Verify the server's certificate; turn off only on purpose."
    )

    @model_validator(mode="after")
    def _host_is_reachable_by_name(self) -> ImapSettings:
        """Check and normalize the host the way the connector will read it.

        `ImapConfig` is the one place that knows what a valid host is; its
        errors surface here as `imap.host`. The placeholder password is never used.
        """
        checked = ImapConfig(host=self.host, username=self.username, password=SecretStr("-"))
        self.host = checked.host
        return self

    def to_server(self) -> ServerSettings:
        return ServerSettings(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            tls_verify=self.tls_verify,
        )


class PasswordAuth(RequestModel):
    """Log in with LOGIN and a password."""

    type: Literal["password"]
    password: ImapPassword = Field(min_length=1, max_length=1024)

    def to_credential(self) -> Credential:
        return Credential(password=self.password)


class OAuthAuth(RequestModel):
    """Log in with XOAUTH2 and an access token from an OAuth provider."""

    type: Literal["oauth"]
    provider: str = Field(
        min_length=1,
        max_length=64,
        examples=["gmail", "microsoft"],
        description="An installed provider (`GET /v1/oauth/providers`): it refreshes the token.",
    )
    access_token: SecretStr = Field(min_length=1, max_length=8192)
    refresh_token: SecretStr | None = Field(default=None, max_length=8192)
    expires_in: Annotated[int, Field(ge=0), WHOLE_NUMBER] | None = Field(
        default=None, description="Seconds until the access token expires."
    )

    @field_validator("provider")
    @classmethod
    def _installed(cls, name: str) -> str:
        known = [provider.name for provider in installed_providers()]
        if name not in known:
            raise ValueError(f"not an installed OAuth provider; one of {', '.join(known)}")
        return name

    def to_credential(self) -> Credential:
        return Credential(
            access_token=self.access_token,
            provider=self.provider,
            refresh_token=self.refresh_token,
            expires_in=self.expires_in,
        )


def _errors_without_union_tag(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Report `auth.password`, not `auth.password.password`.

    A tagged union puts the tag into every error location; clients should see
    the field they wrote, so the tag is dropped again.
    """
    try:
        return handler(value)
    except ValidationError as exc:
        details: list[InitErrorDetails] = []
        for error in exc.errors():
            location = error["loc"]
            if error["type"] not in _TAG_ERRORS and location:
                location = location[1:]
            detail: InitErrorDetails = {
                "type": error["type"],
                "loc": location,
                "input": error["input"],
            }
            if "ctx" in error:
                detail["ctx"] = error["ctx"]
            details.append(detail)
        raise ValidationError.from_exception_data(exc.title, details) from None


Auth = Annotated[
    PasswordAuth | OAuthAuth,
    Field(discriminator="type"),
    WrapValidator(_errors_without_union_tag),
]


class ConnectionCheck(RequestModel):
    """IMAP settings and a credential to try; nothing is saved."""

    imap: ImapSettings
    auth: Auth


class FolderNodeRead(BaseModel):
    """A folder on the server, with its subfolders."""

    full_name: str
    name: str
    delimiter: str | None
    type: FolderType
    selectable: bool
    children: list[FolderNodeRead]

    @classmethod
    def from_node(cls, node: FolderNode) -> FolderNodeRead:
        folder = node.folder
        return cls(
            full_name=folder.full_name,
            name=folder.name,
            delimiter=folder.delimiter,
            type=folder.type,
            selectable=folder.selectable,
            children=[cls.from_node(child) for child in node.children],
        )


class FolderPreviewRead(BaseModel):
    """One folder's counts; for a folder a new mailbox syncs, what its window holds."""

    full_name: str
    messages: int | None = Field(description="null: the server refused STATUS for the folder.")
    unseen: int | None
    size: int | None = Field(
        description="Bytes in the folder; only from a server offering STATUS=SIZE (RFC 8438)."
    )
    synced: bool = Field(description="A new mailbox syncs this folder (inbox and sent).")
    window_messages: int | None = Field(
        description="Messages inside the first-sync window; null for a folder not synced."
    )
    window_bytes: int | None = Field(description="Their bytes (RFC822.SIZE).")

    @classmethod
    def of(cls, folder: FolderPreview) -> FolderPreviewRead:
        counts = folder.counts
        return cls(
            full_name=folder.full_name,
            messages=counts.messages if counts else None,
            unseen=counts.unseen if counts else None,
            size=counts.size if counts else None,
            synced=folder.synced,
            window_messages=folder.window_messages,
            window_bytes=folder.window_bytes,
        )


class SyncPreviewRead(BaseModel):
    """What connecting would cost: a first sync's messages, bytes and rough duration."""

    window_start: date = Field(description="The first day a first sync reaches back to.")
    folders: list[FolderPreviewRead]
    messages: int = Field(description="Messages a first sync fetches, over the synced folders.")
    bytes: int
    estimated_first_sync_seconds: float = Field(
        description="A rough estimate: our per-message cost plus 2 MB/s for the transfer."
    )

    @classmethod
    def of(cls, preview: SyncPreview) -> SyncPreviewRead:
        return cls(
            window_start=preview.window_start,
            folders=[FolderPreviewRead.of(folder) for folder in preview.folders],
            messages=preview.messages,
            bytes=preview.bytes,
            estimated_first_sync_seconds=preview.estimated_seconds,
        )


class ConnectionCheckResult(BaseModel):
    """The login worked: what the server can do, its folders, and what syncing would cost."""

    ok: Literal[True] = True
    capabilities: list[str]
    folders: list[FolderNodeRead]
    preview: SyncPreviewRead | None = Field(description="null when asked with `preview=false`.")

    @classmethod
    def from_report(cls, report: ConnectionReport) -> ConnectionCheckResult:
        return cls(
            capabilities=report.capabilities,
            folders=[FolderNodeRead.from_node(node) for node in report.folders],
            preview=SyncPreviewRead.of(report.preview) if report.preview else None,
        )
