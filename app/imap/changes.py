"""What a watched IMAP session reports: folder state, and changes as typed events.

untagged response --event_from--> MessagesExist | MessageExpunged | MessagesVanished
                                  | MessageChanged (selected folder, RFC 9051 / 7162)
                                  | FolderChanged (another folder, NOTIFY RFC 5465)
                                  | NotificationsOverflowed | None (not a change)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from imapclient.imap_utf7 import decode as _decode_utf7
from imapclient.imap_utf7 import encode as _encode_utf7

from app.imap.errors import ProtocolError
from app.imap.wire import Response, Value, as_list, as_number, as_text, pairs


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """What STATUS (or a NOTIFY STATUS event) says of a folder; None where it said nothing."""

    messages: int | None = None
    uidnext: int | None = None
    uidvalidity: int | None = None
    highestmodseq: int | None = None
    unseen: int | None = None


@dataclass(frozen=True, slots=True)
class SelectedMailbox:
    """The state SELECT/EXAMINE reports (RFC 9051 6.3.2, RFC 7162 HIGHESTMODSEQ)."""

    folder: str
    exists: int
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    readonly: bool


@dataclass(frozen=True, slots=True)
class MessagesExist:
    """`* n EXISTS`: the selected folder now holds `count` messages."""

    folder: str
    count: int


@dataclass(frozen=True, slots=True)
class MessageExpunged:
    """`* n EXPUNGE`: message number `sequence` left the selected folder."""

    folder: str
    sequence: int


@dataclass(frozen=True, slots=True)
class MessagesVanished:
    """`* VANISHED uids` (QRESYNC, RFC 7162): these UIDs left the selected folder."""

    folder: str
    uids: str
    earlier: bool


@dataclass(frozen=True, slots=True)
class MessageChanged:
    """`* n FETCH (...)`: flags (or MODSEQ) of a message in the selected folder changed."""

    folder: str
    sequence: int
    uid: int | None
    flags: frozenset[str] | None
    modseq: int | None


@dataclass(frozen=True, slots=True)
class FolderChanged:
    """`* STATUS folder (...)` under NOTIFY (RFC 5465): a folder that is not selected changed."""

    folder: str
    status: MailboxStatus


@dataclass(frozen=True, slots=True)
class NotificationsOverflowed:
    """`* OK [NOTIFICATIONOVERFLOW]`: the server gave up telling; every folder may have changed."""


Event: TypeAlias = (
    MessagesExist
    | MessageExpunged
    | MessagesVanished
    | MessageChanged
    | FolderChanged
    | NotificationsOverflowed
)


def encode_folder(name: str) -> bytes:
    """Encode a folder name in modified UTF-7 (RFC 3501 5.1.3), as the blocking path does."""
    encoded: bytes = _encode_utf7(name)
    return encoded


def decode_folder(name: bytes) -> str:
    """Decode a modified UTF-7 folder name."""
    decoded: str = _decode_utf7(name)
    return decoded


def event_from(response: Response, selected: str) -> Event | None:
    """Read a change out of an untagged response; `selected` names the selected folder."""
    if response.number is not None:
        return _message_event(selected, response.number, response)
    if response.name == "VANISHED":
        values = response.values()
        earlier = bool(values) and isinstance(values[0], list)
        return MessagesVanished(selected, as_text(values[-1]), earlier)
    if response.name == "STATUS":
        return FolderChanged(*parse_status(response))
    if response.code == "NOTIFICATIONOVERFLOW":
        return NotificationsOverflowed()
    return None


def _message_event(folder: str, number: int, response: Response) -> Event | None:
    """Read `* n EXISTS`, `* n EXPUNGE` or `* n FETCH (UID u FLAGS (...) MODSEQ (m))`."""
    if response.name == "EXISTS":
        return MessagesExist(folder, number)
    if response.name == "EXPUNGE":
        return MessageExpunged(folder, number)
    if response.name != "FETCH":
        return None  # RECENT, or an extension's numbered response
    items = pairs(as_list(response.values()[0]))
    flags = items.get("FLAGS")
    modseq = items.get("MODSEQ")
    return MessageChanged(
        folder,
        number,
        uid=as_number(items["UID"]) if "UID" in items else None,
        flags=frozenset(as_text(f) for f in as_list(flags)) if flags is not None else None,
        modseq=as_number(as_list(modseq)[0]) if modseq is not None else None,
    )


def parse_status(response: Response) -> tuple[str, MailboxStatus]:
    """Read `* STATUS folder (NAME n ...)`."""
    values: list[Value] = response.values()
    if len(values) != 2:
        raise ProtocolError("a STATUS response without a folder and a list")
    name = values[0]
    if not isinstance(name, bytes):
        raise ProtocolError("a STATUS response without a folder name")
    items = {key: as_number(value) for key, value in pairs(as_list(values[1])).items()}
    return decode_folder(name), MailboxStatus(
        messages=items.get("MESSAGES"),
        uidnext=items.get("UIDNEXT"),
        uidvalidity=items.get("UIDVALIDITY"),
        highestmodseq=items.get("HIGHESTMODSEQ"),
        unseen=items.get("UNSEEN"),
    )
