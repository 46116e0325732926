"""Discover a mailbox's folders: hierarchy, RFC 6154 special-use types, status counts.

Servers that announce SPECIAL-USE mark Sent, Drafts, Trash... with attributes;
older ones do not, so a folder without an attribute is typed by its name in
the languages our users write in. Only the last hierarchy level is compared,
so `INBOX.Sent`, `[Gmail]/Sent Mail` and `Sent Items` are all sent folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_response

from app.imap.connection import ImapConnection, imap_errors
from app.imap.errors import ProtocolError


class FolderType(StrEnum):
    """Role of a folder, from RFC 6154 SPECIAL-USE flags or its localized name."""

    INBOX = "inbox"
    SENT = "sent"
    DRAFTS = "drafts"
    TRASH = "trash"
    SPAM = "spam"
    ARCHIVE = "archive"
    OTHER = "other"


_SPECIAL_USE: dict[str, FolderType] = {
    "\\SENT": FolderType.SENT,
    "\\DRAFTS": FolderType.DRAFTS,
    "\\TRASH": FolderType.TRASH,
    "\\JUNK": FolderType.SPAM,
    "\\ARCHIVE": FolderType.ARCHIVE,
}

_LOCALIZED_NAMES: dict[FolderType, tuple[str, ...]] = {
    FolderType.SENT: (
        "sent",
        "sent items",
        "sent mail",
        "sent messages",
        "sent-mail",
        "gesendet",
        "gesendete objekte",
        "gesendete elemente",
        "envoyés",
        "éléments envoyés",
        "messages envoyés",
        "enviados",
        "elementos enviados",
        "itens enviados",
        "inviata",
        "posta inviata",
        "inviati",
        "verzonden",
        "verzonden items",
        "отправленные",
        "wysłane",
        "skickat",
        "skickade objekt",
        "sendt",
        "sendte elementer",
        "lähetetyt",
        "odeslané",
        "elküldött",
        "gönderilmiş öğeler",
        "gönderilenler",
        "送信済み",
        "送信済みアイテム",
        "已发送",
        "已发送邮件",
        "寄件備份",
        "보낸편지함",
        "נשלחו",
        "المرسلة",
        "απεσταλμένα",
    ),
    FolderType.DRAFTS: (
        "drafts",
        "draft",
        "entwürfe",
        "brouillons",
        "borradores",
        "bozze",
        "rascunhos",
        "concepten",
        "черновики",
        "kopie robocze",
        "utkast",
        "kladder",
        "luonnokset",
        "koncepty",
        "piszkozatok",
        "taslaklar",
        "下書き",
        "草稿",
        "임시보관함",
    ),
    FolderType.TRASH: (
        "trash",
        "deleted items",
        "deleted messages",
        "bin",
        "papierkorb",
        "gelöschte objekte",
        "gelöschte elemente",
        "corbeille",
        "éléments supprimés",
        "papelera",
        "elementos eliminados",
        "cestino",
        "posta eliminata",
        "lixeira",
        "lixo",
        "prullenbak",
        "verwijderde items",
        "корзина",
        "удаленные",
        "удалённые",
        "kosz",
        "papperskorgen",
        "borttagna objekt",
        "papirkurv",
        "slettede elementer",
        "roskakori",
        "koš",
        "kuka",
        "çöp kutusu",
        "ゴミ箱",
        "已删除",
        "已删除邮件",
        "휴지통",
    ),
    FolderType.SPAM: (
        "spam",
        "junk",
        "junk e-mail",
        "junk email",
        "junk mail",
        "bulk mail",
        "spamverdacht",
        "courrier indésirable",
        "indésirables",
        "correo no deseado",
        "posta indesiderata",
        "lixo eletrônico",
        "ongewenste e-mail",
        "спам",
        "нежелательная почта",
        "skräppost",
        "søppelpost",
        "roskaposti",
        "nevyžádaná pošta",
        "迷惑メール",
        "垃圾邮件",
        "스팸편지함",
    ),
    FolderType.ARCHIVE: (
        "archive",
        "archives",
        "archiv",
        "archivo",
        "archivio",
        "arquivo",
        "archief",
        "архив",
        "archiwum",
        "arkiv",
        "arkisto",
        "アーカイブ",
        "归档",
        "보관함",
    ),
}
_TYPE_BY_NAME: dict[str, FolderType] = {
    name: folder_type for folder_type, names in _LOCALIZED_NAMES.items() for name in names
}


def folder_type(full_name: str, delimiter: str | None, attributes: frozenset[str]) -> FolderType:
    """Type a folder: INBOX by name, then special-use attributes, then its localized name."""
    if full_name.upper() == "INBOX":
        return FolderType.INBOX
    for attribute in attributes:
        special = _SPECIAL_USE.get(attribute.upper())
        if special:
            return special
    leaf = full_name.rsplit(delimiter, 1)[-1] if delimiter else full_name
    return _TYPE_BY_NAME.get(leaf.strip().casefold(), FolderType.OTHER)


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    """One folder as the server lists it."""

    full_name: str
    name: str
    delimiter: str | None
    parent: str | None
    type: FolderType
    selectable: bool
    attributes: frozenset[str]


@dataclass(slots=True)
class FolderNode:
    """A folder with its subfolders, for showing the tree."""

    folder: RemoteFolder
    children: list[FolderNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """RFC 3501 STATUS of one folder; `highestmodseq` only with CONDSTORE (RFC 7162)."""

    messages: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int | None


@dataclass(frozen=True, slots=True)
class FolderCounts:
    """What a folder holds (RFC 3501 STATUS); `size` in bytes only with STATUS=SIZE (RFC 8438)."""

    messages: int
    unseen: int
    size: int | None


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class FolderListing:
    """Every folder, and the STATUS of those the server reported in the same LIST."""

    folders: list[RemoteFolder]
    statuses: dict[str, FolderStatus]


_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY")


class FolderManager:
    """List folders and read their status over one session."""

    def __init__(self, connection: ImapConnection) -> None:
        self._connection = connection
        self._client = connection.client

    def folders(self) -> list[RemoteFolder]:
        """List every folder, parents before children, with types and parent names."""
        return self.listing().folders

    def listing(self) -> FolderListing:
        """List folders, with every folder's STATUS in the same round trip where possible.

        With LIST-STATUS (RFC 5819) one command tells whether any folder of the
        mailbox changed.
        """
        folders, statuses = self._list(self._status_items())
        return FolderListing(folders, {name: _folder_status(raw) for name, raw in statuses.items()})

    def counted_listing(self) -> tuple[list[RemoteFolder], dict[str, FolderCounts]]:
        """List folders and count what each selectable one holds: one LIST-STATUS, else STATUS each.

        The size comes only from a server offering STATUS=SIZE (RFC 8438). A folder
        whose STATUS the server refuses (no access, just deleted) is left uncounted.
        """
        items = ("MESSAGES", "UNSEEN", *(("SIZE",) if self._connection.has("STATUS=SIZE") else ()))
        folders, statuses = self._list(items)
        counts: dict[str, FolderCounts] = {}
        for folder in folders:
            raw = statuses.get(folder.full_name)
            if raw is None and folder.selectable:
                try:
                    with imap_errors():
                        raw = self._client.folder_status(folder.full_name, list(items))
                except ProtocolError:
                    continue
            if raw is not None:
                counts[folder.full_name] = _folder_counts(raw)
        return folders, counts

    def _list(
        self, status_items: tuple[str, ...]
    ) -> tuple[list[RemoteFolder], dict[str, dict[bytes | str, object]]]:
        """LIST every folder, with `status_items` of each where LIST-STATUS allows.

        SPECIAL-USE attributes are asked for explicitly (RFC 6154 `RETURN
        (SPECIAL-USE)`) because servers need not send them unasked.
        """
        options = []
        if self._connection.has("SPECIAL-USE") and self._connection.has("LIST-EXTENDED"):
            options.append("SPECIAL-USE")
        if self._connection.has("LIST-STATUS"):
            options.append(f"STATUS ({' '.join(status_items)})")
        imap = self._client._imap
        with imap_errors():
            if options:
                typ, data = imap._simple_command(
                    "LIST", '""', '"*"', f"RETURN ({' '.join(options)})"
                )
            else:
                typ, data = imap._simple_command("LIST", '""', '"*"')
            self._client._checkok("list", typ, data)
            status_lines = imap.untagged_responses.pop("STATUS", [])
            _typ, lines = imap._untagged_response(typ, data, "LIST")
            listed = self._client._proc_folder_list(lines)
        statuses = dict(_parse_status_line(line) for line in status_lines if line)
        return _remote_folders(listed), statuses

    def tree(self) -> list[FolderNode]:
        """Return the folders as a tree of roots with their children."""
        return folder_tree(self.folders())

    def status(self, full_name: str) -> FolderStatus:
        """Ask STATUS for the counters that tell whether a folder changed, without selecting it."""
        with imap_errors():
            raw = self._client.folder_status(full_name, list(self._status_items()))
        return _folder_status(raw)

    def _status_items(self) -> tuple[str, ...]:
        if self._connection.has("CONDSTORE"):
            return (*_STATUS_ITEMS, "HIGHESTMODSEQ")
        return _STATUS_ITEMS


def folder_tree(folders: list[RemoteFolder]) -> list[FolderNode]:
    """Arrange listed folders (parents first) as a tree of roots with their children."""
    nodes = {folder.full_name: FolderNode(folder) for folder in folders}
    roots = []
    for node in nodes.values():
        parent = node.folder.parent
        if parent is None:
            roots.append(node)
        else:
            nodes[parent].children.append(node)
    return roots


def _remote_folders(
    listed: list[tuple[tuple[bytes, ...], bytes | None, str]],
) -> list[RemoteFolder]:
    names = {_text(name) or "" for _flags, _delim, name in listed}
    folders = []
    for raw_flags, raw_delimiter, raw_name in listed:
        full_name = _text(raw_name) or ""
        delimiter = _text(raw_delimiter)
        attributes = frozenset(_text(flag) or "" for flag in raw_flags)
        parent, _, leaf = full_name.rpartition(delimiter) if delimiter else ("", "", full_name)
        folders.append(
            RemoteFolder(
                full_name=full_name,
                name=leaf,
                delimiter=delimiter,
                parent=parent if parent in names else None,
                type=folder_type(full_name, delimiter, attributes),
                selectable=not {"\\NOSELECT", "\\NONEXISTENT"} & {a.upper() for a in attributes},
                attributes=attributes,
            )
        )
    return sorted(folders, key=_tree_order)


def _folder_status(raw: dict[bytes | str, object]) -> FolderStatus:
    counters = {(_text(key) or "").upper(): int(str(value)) for key, value in raw.items()}
    return FolderStatus(
        messages=counters["MESSAGES"],
        uidnext=counters["UIDNEXT"],
        uidvalidity=counters["UIDVALIDITY"],
        highestmodseq=counters.get("HIGHESTMODSEQ"),
    )


def _folder_counts(raw: dict[bytes | str, object]) -> FolderCounts:
    counters = {(_text(key) or "").upper(): int(str(value)) for key, value in raw.items()}
    return FolderCounts(
        messages=counters["MESSAGES"], unseen=counters["UNSEEN"], size=counters.get("SIZE")
    )


def _parse_status_line(
    line: bytes | tuple[bytes, bytes],
) -> tuple[str, dict[bytes | str, object]]:
    """Parse one untagged `STATUS name (ITEM n ...)` that LIST-STATUS sent."""
    name, items = parse_response([line])
    full_name = decode_utf7(name) if isinstance(name, bytes) else str(name)
    return full_name, dict(zip(items[::2], items[1::2], strict=True))


def _tree_order(folder: RemoteFolder) -> tuple[int, list[str]]:
    """INBOX first, then by path, so a parent always precedes its children."""
    path = folder.full_name.split(folder.delimiter) if folder.delimiter else [folder.full_name]
    return (0 if folder.type is FolderType.INBOX else 1, [part.casefold() for part in path])
