"""Typed failures of the IMAP layer.

Every third-party exception (socket, ssl, imaplib, imapclient) is translated
where it enters, so callers decide by type, never by message text::

    ImapError
    ├── AuthenticationFailed   credentials refused: tell the owner
    ├── BlockedHost            the host resolves to a forbidden address
    ├── TlsFailed              handshake or certificate verification failed
    ├── ProtocolError          the server answered NO/BAD or nonsense
    │   ├── FolderNotFound     the folder does not exist (any more)
    │   └── ResponseTooLarge   a line or literal over the client's limit (never allocated)
    └── NetworkError           transient: retry later with backoff
        ├── Unreachable        connection refused, no route, DNS failure
        ├── TimedOut           a read, or the whole operation, took longer than allowed
        ├── ConnectionLost     the server hung up mid-session
        └── ServerUnavailable  the server cannot serve us now (RFC 5530 UNAVAILABLE)
"""

from __future__ import annotations


class ImapError(Exception):
    """Base of the IMAP layer's errors; `code` is stable and safe to show."""

    code = "imap_error"


class AuthenticationFailed(ImapError):
    code = "auth_failed"


class BlockedHost(ImapError):
    code = "blocked_host"


class TlsFailed(ImapError):
    code = "tls_error"


class ProtocolError(ImapError):
    code = "protocol_error"


class FolderNotFound(ProtocolError):
    code = "folder_not_found"


class FolderReadOnly(ProtocolError):
    """The server lets this session only read the folder: it keeps its flags as they are."""

    code = "folder_read_only"


class ResponseTooLarge(ProtocolError):
    code = "response_too_large"


class NetworkError(ImapError):
    code = "network_error"


class Unreachable(NetworkError):
    code = "unreachable"


class TimedOut(NetworkError):
    code = "timeout"


class ConnectionLost(NetworkError):
    code = "connection_lost"


class ServerUnavailable(NetworkError):
    code = "server_unavailable"
