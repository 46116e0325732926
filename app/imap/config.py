"""What it takes to reach one IMAP account, validated before any socket opens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Security = Literal["ssl", "starttls", "none"]

# A DNS name (RFC 1123 labels) or an IPv4/IPv6 literal; no scheme, path, port or spaces.
_HOST = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+$|^[0-9A-Fa-f:.]+$"
)


class ImapConfig(BaseModel):
    """Server address, transport security and credentials of one account.

    Exactly one of `password` (LOGIN) and `access_token` (XOAUTH2) is given.
    Secrets are `SecretStr`, so they never show in reprs, logs or tracebacks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=993, ge=1, le=65535)
    security: Security = "ssl"
    username: str = Field(min_length=1, max_length=320)
    password: SecretStr | None = None
    access_token: SecretStr | None = None
    tls_verify: bool = True

    @field_validator("host")
    @classmethod
    def _host_is_a_name_or_address(cls, value: str) -> str:
        host = value.strip().strip("[]")
        if not _HOST.match(host):
            raise ValueError("must be a host name or IP address, without scheme or port")
        return host.lower()

    @model_validator(mode="after")
    def _one_credential(self) -> ImapConfig:
        if (self.password is None) == (self.access_token is None):
            raise ValueError("give exactly one of password or access_token")
        return self


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How the connector behaves, independent of the account (service-wide settings)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # Seconds the whole session may last, from connect to logout; None: no deadline (syncs
    # checkpoint on their own time budget and may read for longer).
    operation_timeout: float | None = None
    max_line_bytes: int = 1 << 20
    max_literal_bytes: int = 64 << 20
    allow_private_hosts: bool = False
    ca_file: Path | None = None
    client_name: str = "imap-bridge"
