"""What it takes to reach one IMAP account, validated before any socket opens."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)


class Security(StrEnum):
    """Transport security of the IMAP connection: TLS from the start, STARTTLS, or none."""

    SSL = "ssl"
    STARTTLS = "starttls"
    NONE = "none"


# One DNS label (RFC 1123): letters, digits, hyphens, and `_` as some private zones use it.
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_LINE_BREAK_OR_NUL = re.compile(r"[\r\n\x00]")


def is_host(host: str) -> bool:
    """Say whether `host` is a DNS name or an IP literal, in time linear in its length.

    Labels are checked one by one after a split on dots: a single pattern that
    lets a run of letters split into labels in many ways backtracks exponentially.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        return all(
            _LABEL.fullmatch(label) and not label.startswith("-") and not label.endswith("-")
            for label in labels
        )
    return not (isinstance(address, ipaddress.IPv6Address) and address.scope_id)


def _fits_a_quoted_string(password: SecretStr) -> SecretStr:
    """Refuse CR, LF and NUL, which no IMAP quoted string holds (RFC 3501 §4.3).

    LOGIN sends the password quoted: a line break in it would end the command
    and start another one of the caller's choosing.
    """
    if _LINE_BREAK_OR_NUL.search(password.get_secret_value()):
        raise ValueError("must not contain CR, LF or NUL")
    return password


ImapPassword = Annotated[SecretStr, AfterValidator(_fits_a_quoted_string)]


class ImapConfig(BaseModel):
    """Server address, transport security and credentials of one account.

    Exactly one of `password` (LOGIN) and `access_token` (XOAUTH2) is given.
    Secrets are `SecretStr`, so they never show in reprs, logs or tracebacks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=993, ge=1, le=65535)
    security: Security = Security.SSL
    username: str = Field(min_length=1, max_length=320)
    password: ImapPassword | None = None
    access_token: SecretStr | None = None
    tls_verify: bool = True

    @field_validator("host")
    @classmethod
    def _host_is_a_name_or_address(cls, value: str) -> str:
        host = value.strip().strip("[]")
        if not is_host(host):
            raise ValueError("must be a host name or IP address, without scheme or port")
        return host.lower()

    @field_validator("username")
    @classmethod
    def _username_has_no_control_characters(cls, value: str) -> str:
        """Refuse control characters, which would change the command the server reads.

        imaplib sends LOGIN's username unquoted, so CR or LF would start a command
        of the caller's choosing; XOAUTH2 separates its fields with ^A.
        """
        if _CONTROL_CHARACTER.search(value):
            raise ValueError("must not contain control characters (CR, LF, NUL ...)")
        return value

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
