"""Select a folder, find messages, fetch and parse them in bounded batches.

Fetching never holds more than one batch of raw messages in memory, and a
message expunged between SEARCH and FETCH simply does not come back: it is
not an error (RFC 3501 7.4.2 lets the server omit it).
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from imapclient.response_parser import parse_fetch_response

from app.imap.connection import ImapConnection, imap_errors
from app.imap.errors import FolderNotFound, FolderReadOnly, ProtocolError
from app.imap.fetch import uid_fetch
from app.imap.message import AttachmentInfo, ParsedMessage, normalise_flags, parse_message
from app.imap.mime_scan import part_transfer_encoding
from app.imap.search import SearchQuery, SearchQueryBuilder
from app.imap.transfer import TransferDecoder

T = TypeVar("T")

DEFAULT_BATCH_SIZE = 200
SUMMARY_HEADER_BYTES = 1 << 18
IDENTITY_BATCH_SIZE = 1000
_IDENTITY_HEADERS = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]"


@dataclass(frozen=True, slots=True)
class FlagState:
    """A message's flags and, with CONDSTORE, the mod-sequence of their last change."""

    flags: frozenset[str]
    modseq: int | None


@dataclass(frozen=True, slots=True)
class SelectedFolder:
    """What SELECT/EXAMINE reported (RFC 3501 6.3.1; HIGHESTMODSEQ from RFC 7162)."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    highestmodseq: int | None


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Split `items` into consecutive runs of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EmailManager:
    """Message operations on one session; every call is about the selected folder."""

    def __init__(
        self,
        connection: ImapConnection,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_message_bytes: int | None = None,
    ) -> None:
        self._connection = connection
        self._client = connection.client
        self._client.normalise_times = False  # keep INTERNALDATE's zone: dates stay tz-aware
        self._batch_size = batch_size
        self._max_message_bytes = max_message_bytes
        self._modseq_enabled = False
        self._fetch_items = [b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"]
        if connection.has("X-GM-EXT-1"):
            self._fetch_items.append(b"X-GM-MSGID")

    @staticmethod
    def query() -> SearchQueryBuilder:
        """Start a search query (see `app.imap.search`)."""
        return SearchQueryBuilder()

    def select_folder(self, name: str, *, readonly: bool = True) -> SelectedFolder:
        """Select `name` (EXAMINE when `readonly`, so fetching never sets \\Seen).

        A SELECT the server answers with read-only access ([READ-ONLY], RFC 3501
        7.1) raises FolderReadOnly: imaplib refuses it, the session stays usable.
        """
        self._enable_modseq()
        try:
            with imap_errors():
                try:
                    raw = self._client.select_folder(name, readonly=readonly)
                except imaplib.IMAP4.readonly as exc:
                    raise FolderReadOnly(f"the server lets us only read {name!r}") from exc
        except FolderReadOnly:
            raise
        except ProtocolError as exc:
            if not self._exists(name):
                raise FolderNotFound(f"folder {name!r} does not exist") from exc
            raise
        exists = int(raw.get(b"EXISTS", 0))
        uidnext = _optional_int(raw.get(b"UIDNEXT"))
        if uidnext is None and exists:
            uidnext = self._uid_after_last()
        return SelectedFolder(
            name=name,
            uidvalidity=int(raw[b"UIDVALIDITY"]),
            uidnext=uidnext,
            exists=exists,
            highestmodseq=_optional_int(raw.get(b"HIGHESTMODSEQ")),
        )

    def _uid_after_last(self) -> int | None:
        """Stand in for the UIDNEXT a SELECT did not send: one above the last message's UID.

        RFC 3501 only says a server SHOULD send [UIDNEXT] on SELECT; Courier-IMAP never
        does. Without it a first sync would take its high mark from the newest UID in
        the window, and older mail with higher UIDs would later be fetched as new.
        `UID FETCH * (UID)` names the last message of this selection: no UID between it
        and the real UIDNEXT is held by a message, so the mark it gives is as safe.
        """
        response = self._fetch_uid_set("*", ["UID"], [])
        return max(response) + 1 if response else None

    def unselect_folder(self) -> None:
        """Leave the selected folder, if any, without expunging it.

        STATUS SHOULD NOT ask about the selected folder (RFC 3501 6.3.10): Dovecot
        answers it from the session's own view, blind to mail added since. UNSELECT
        (RFC 3691) where offered, else CLOSE, which expunges only a folder selected
        read-write (RFC 3501 6.4.2), so that one is refused.
        """
        imap = self._client._imap
        if imap.state != "SELECTED":
            return
        command = "unselect" if self._connection.has("UNSELECT") else "close"
        if command == "close" and not imap.is_readonly:
            raise ProtocolError("without UNSELECT, leaving a read-write folder would expunge it")
        with imap_errors():
            self._client._command_and_check(command)

    def _exists(self, name: str) -> bool:
        """Ask LIST whether `name` exists: servers word a failed SELECT differently."""
        with imap_errors():
            return bool(self._client.list_folders("", name))

    def _enable_modseq(self) -> None:
        """ENABLE QRESYNC (or CONDSTORE) once, so SELECT reports HIGHESTMODSEQ (RFC 7162 3.1)."""
        if self._modseq_enabled:
            return
        self._modseq_enabled = True
        for extension in ("QRESYNC", "CONDSTORE"):
            if self._connection.has(extension):
                with imap_errors():
                    self._client.enable(extension)
                return

    def search(self, query: SearchQuery) -> list[int]:
        """Return the UIDs matching `query`, ascending."""
        with imap_errors():
            uids = self._client.search(list(query.criteria), query.charset)
        return sorted(int(uid) for uid in uids)

    def uids(self, first_uid: int, last_uid: int | None = None) -> list[int]:
        """List the UIDs from `first_uid` to `last_uid` (None: the last message), ascending.

        Asked with `UID FETCH n:m (UID)`, as mbsync and offlineimap do, not with `UID
        SEARCH UID n:m`, which some servers evaluate wrongly. `n:*` names the last
        message even when its UID is below n (RFC 3501 6.4.8), so the answer is cut
        to the range.
        """
        last = "*" if last_uid is None else str(last_uid)
        if last_uid is not None and last_uid < first_uid:
            return []
        listed = self._fetch_uid_set(f"{first_uid}:{last}", ["UID"], [])
        return sorted(
            uid for uid in listed if uid >= first_uid and (last_uid is None or uid <= last_uid)
        )

    def find(self, query: SearchQuery, *, limit: int | None = None) -> list[ParsedMessage]:
        """Search and fetch: the newest `limit` matches (all when None), oldest first."""
        uids = self.search(query)
        if limit is not None:
            uids = uids[-limit:] if limit else []
        return list(self.fetch(uids))

    def fetch(
        self, uids: Sequence[int], *, batch_size: int | None = None
    ) -> Iterator[ParsedMessage]:
        """Fetch and parse `uids` in batches, in the order given; vanished UIDs are skipped.

        With `max_message_bytes`, each batch first asks for the sizes (RFC822.SIZE):
        a larger message is never downloaded, only summarised (`summaries`) with a
        defect saying why it has no body, so it is still stored, not lost.
        """
        for batch in chunked(list(uids), batch_size or self._batch_size):
            oversized = self._oversized(batch)
            parsed = self._fetch_parsed([uid for uid in batch if uid not in oversized])
            parsed.update((m.uid, self._bodiless(m)) for m in self.summaries(sorted(oversized)))
            yield from (parsed[uid] for uid in batch if uid in parsed)

    def _oversized(self, batch: Sequence[int]) -> set[int]:
        """Return the UIDs of `batch` larger than `max_message_bytes` (none without a limit)."""
        limit = self._max_message_bytes
        if limit is None or not batch:
            return set()
        return {uid for uid, size in self.sizes(batch).items() if size is not None and size > limit}

    def sizes(self, uids: Sequence[int]) -> dict[int, int | None]:
        """Return each message's size in bytes (RFC822.SIZE) without downloading it."""
        if not uids:
            return {}
        with imap_errors():
            return {
                uid: _optional_int(data.get(b"RFC822.SIZE"))
                for uid, data in uid_fetch(self._client._imap, uids, [b"UID", b"RFC822.SIZE"])
            }

    def _bodiless(self, message: ParsedMessage) -> ParsedMessage:
        defect = (
            f"message of {message.size} bytes is over the limit of {self._max_message_bytes}:"
            " stored from its header, without its body"
        )
        return replace(message, defects=(*message.defects, defect))

    def _fetch_parsed(self, batch: Sequence[int]) -> dict[int, ParsedMessage]:
        """Parse each message as it arrives; raw bytes are dropped once parsed.

        A flag update of a message already parsed (another session changed it
        during the fetch) replaces its flags: the later response is the truth.
        """
        parsed: dict[int, ParsedMessage] = {}
        seen: dict[int, dict[bytes, Any]] = {}
        with imap_errors():
            for uid, data in uid_fetch(self._client._imap, batch, self._fetch_items):
                if data.get(b"BODY[]") is not None:
                    merged = {**seen.pop(uid, {}), **data}
                    parsed[uid] = parse_message(
                        merged[b"BODY[]"],
                        uid=uid,
                        flags=merged.get(b"FLAGS", ()),
                        internal_date=_optional_datetime(merged.get(b"INTERNALDATE")),
                        size=_optional_int(merged.get(b"RFC822.SIZE")),
                        gm_msgid=_optional_int(merged.get(b"X-GM-MSGID")),
                    )
                elif uid in parsed and b"FLAGS" in data:
                    parsed[uid] = replace(parsed[uid], flags=normalise_flags(data[b"FLAGS"]))
                else:
                    seen.setdefault(uid, {}).update(data)
        return parsed

    def identities(self, uids: Sequence[int]) -> Iterator[ParsedMessage]:
        """Fetch only what identifies each message (Message-ID, Date, From, Subject, size).

        The sync engine uses this to recognise mail it already stores (a move,
        a copy, a UIDVALIDITY reset) without downloading bodies again.
        """
        items = [b"UID", b"FLAGS", b"RFC822.SIZE", _IDENTITY_HEADERS]
        if self._connection.has("X-GM-EXT-1"):
            items.append(b"X-GM-MSGID")
        for uid, data in self._fetch_each(uids, items, IDENTITY_BATCH_SIZE):
            header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
            yield parse_message(
                bytes(header or b""),
                uid=uid,
                flags=data.get(b"FLAGS", ()),
                size=_optional_int(data.get(b"RFC822.SIZE")),
                gm_msgid=_optional_int(data.get(b"X-GM-MSGID")),
            )

    def summaries(self, uids: Sequence[int]) -> Iterator[ParsedMessage]:
        """Fetch what a list of messages shows, never a body: header, flags, size, structure.

        The header is read up to `SUMMARY_HEADER_BYTES` (a partial FETCH), and the
        attachments come from BODYSTRUCTURE, so a search hit costs a few
        kilobytes however large the message. Bodies stay None.
        """
        items = [
            b"UID",
            b"FLAGS",
            b"INTERNALDATE",
            b"RFC822.SIZE",
            b"BODYSTRUCTURE",
            _partial_item("HEADER", 0, SUMMARY_HEADER_BYTES),
        ]
        for uid, data in self._fetch_each(uids, items, self._batch_size):
            message = parse_message(
                _section(data, "HEADER") or b"",
                uid=uid,
                flags=data.get(b"FLAGS", ()),
                internal_date=_optional_datetime(data.get(b"INTERNALDATE")),
                size=_optional_int(data.get(b"RFC822.SIZE")),
            )
            attachments = tuple(structure_attachments(data.get(b"BODYSTRUCTURE")))
            yield replace(message, text=None, html=None, attachments=attachments)

    def _fetch_each(
        self, uids: Sequence[int], items: list[bytes], batch_size: int
    ) -> Iterator[tuple[int, dict[bytes, Any]]]:
        """FETCH `items` batch by batch; yield each UID the server answered for, in order
        (a UID expunged meanwhile has no answer and is passed over)."""
        for batch in chunked(list(uids), batch_size):
            with imap_errors():
                response: dict[int, dict[bytes, Any]] = self._client.fetch(batch, items)
            for uid in batch:
                data = response.get(uid)
                if data is not None:
                    yield uid, data

    def flags(self, first_uid: int, last_uid: int) -> dict[int, frozenset[str]]:
        """Return the flags of every message in the UID range (a full flag scan)."""
        return {
            uid: state.flags for uid, state in self._flag_fetch(first_uid, last_uid, []).items()
        }

    def flags_changed_since(
        self, first_uid: int, last_uid: int, modseq: int
    ) -> dict[int, FlagState]:
        """Return flags changed after `modseq` in the UID range (RFC 7162 CHANGEDSINCE)."""
        return self._flag_fetch(first_uid, last_uid, [f"CHANGEDSINCE {modseq}"])

    def _flag_fetch(
        self, first_uid: int, last_uid: int, modifiers: list[str]
    ) -> dict[int, FlagState]:
        if last_uid < first_uid:
            return {}
        items = ["UID", "FLAGS", *(["MODSEQ"] if modifiers else [])]
        response = self._fetch_uid_range(first_uid, last_uid, items, modifiers)
        states = {}
        for uid, data in response.items():
            if not first_uid <= uid <= last_uid:  # "n:m" may answer with the last message
                continue
            modseq = data.get(b"MODSEQ")
            states[uid] = FlagState(
                flags=normalise_flags(data.get(b"FLAGS", ())),
                modseq=int(modseq[0]) if modseq else None,
            )
        return states

    def _fetch_uid_range(
        self, first_uid: int, last_uid: int, items: list[str], modifiers: list[str]
    ) -> dict[int, dict[bytes, Any]]:
        """UID FETCH a whole range in one command (imapclient only takes lists of UIDs)."""
        return self._fetch_uid_set(f"{first_uid}:{last_uid}", items, modifiers)

    def _fetch_uid_set(
        self, uid_set: str, items: list[str], modifiers: list[str]
    ) -> dict[int, dict[bytes, Any]]:
        imap = self._client._imap
        args = [uid_set, f"({' '.join(items)})"]
        if modifiers:
            args.append(f"({' '.join(modifiers)})")
        with imap_errors():
            tag = imap._command("UID", "FETCH", *args)
            typ, data = imap._command_complete("FETCH", tag)
            self._client._checkok("fetch", typ, data)
            _typ, lines = imap._untagged_response(typ, data, "FETCH")
            parsed: dict[int, dict[bytes, Any]] = parse_fetch_response(lines, False, True)
        return parsed

    def store_flags(self, uid: int, *, add: Sequence[str], remove: Sequence[str]) -> bool:
        """Add and remove flags of `uid` in the folder selected read-write; False when gone.

        UID STORE +FLAGS.SILENT / -FLAGS.SILENT (RFC 3501 6.4.6): the server sends no
        FETCH back, and the other flags stay as they are. A UID STORE of a UID that is
        gone succeeds without effect, so the message is looked for first.
        """
        if self._fetch_one(uid, [b"FLAGS"]) is None:
            return False
        with imap_errors():
            if add:
                self._client.add_flags([uid], list(add), silent=True)
            if remove:
                self._client.remove_flags([uid], list(remove), silent=True)
        return True

    def source_chunks(self, uid: int, chunk_bytes: int) -> Iterator[bytes] | None:
        """Return the RFC 5322 source of `uid` in chunks of `chunk_bytes`, or None when gone.

        Each chunk is one partial FETCH (`BODY.PEEK[]<offset.length>`, RFC 3501
        6.4.5), so a message of any size costs one chunk of memory. The first
        chunk is fetched now, so a message that is gone is known before the
        caller answers anything; the rest as the iterator is consumed.
        """
        first = self._partial(uid, "", 0, chunk_bytes)
        if first is None:
            return None
        return self._following_chunks(uid, "", chunk_bytes, first)

    def part_chunks(self, uid: int, part_id: str, chunk_bytes: int) -> Iterator[bytes] | None:
        """Return body part `part_id` of `uid` decoded, in chunks, or None when it is gone.

        Its MIME header (`BODY[part.MIME]`) says the transfer encoding, which is
        undone chunk by chunk (`TransferDecoder`), escapes cut by a chunk
        boundary included.
        """
        mime = f"{part_id}.MIME"
        data = self._fetch_one(
            uid, [f"BODY.PEEK[{mime}]".encode(), _partial_item(part_id, 0, chunk_bytes)]
        )
        first = _section(data, part_id) if data is not None else None
        if data is None or first is None:
            return None
        decoder = TransferDecoder(part_transfer_encoding(_section(data, mime) or b""))
        return _decoded(decoder, self._following_chunks(uid, part_id, chunk_bytes, first))

    def _following_chunks(
        self, uid: int, section: str, chunk_bytes: int, first: bytes
    ) -> Iterator[bytes]:
        """Yield `first`, then fetch on until a chunk comes back short (the section's end)."""
        chunk, offset = first, 0
        while True:
            yield chunk
            offset += len(chunk)
            if len(chunk) < chunk_bytes:
                return
            following = self._partial(uid, section, offset, chunk_bytes)
            if following is None:
                raise ProtocolError("the message vanished from the folder during the download")
            chunk = following

    def _partial(self, uid: int, section: str, offset: int, length: int) -> bytes | None:
        """Fetch `length` bytes of a section from `offset`; None when the message is gone."""
        data = self._fetch_one(uid, [_partial_item(section, offset, length)])
        return _section(data, section) if data is not None else None

    def _fetch_one(self, uid: int, items: list[bytes]) -> dict[bytes, Any] | None:
        with imap_errors():
            response: dict[int, dict[bytes, Any]] = self._client.fetch([uid], items)
        return response.get(uid)


def _partial_item(section: str, offset: int, length: int) -> bytes:
    return f"BODY.PEEK[{section}]<{offset}.{length}>".encode()


def _section(data: dict[bytes, Any], section: str) -> bytes | None:
    """Find a section in a FETCH response, whether the server echoed the origin (`<0>`) or not."""
    name = f"BODY[{section}]".encode()
    for key, value in data.items():
        if key == name or (key.startswith(name) and key[len(name) : len(name) + 1] == b"<"):
            return bytes(value or b"")
    return None


def _decoded(decoder: TransferDecoder, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield decoder.feed(chunk)
    yield decoder.finish()


def structure_attachments(structure: object, part_id: str = "") -> Iterator[AttachmentInfo]:
    """Find the attachments a BODYSTRUCTURE (RFC 3501 7.4.2) describes, without the bodies.

    A leaf is an attachment when its disposition says so, or when it is not
    text and carries a file name without an inline disposition; sizes are the
    encoded ones, since nothing is decoded.
    """
    if not isinstance(structure, tuple | list) or not structure:
        return
    if isinstance(structure[0], list):  # multipart: its parts, then its subtype
        for number, part in enumerate(structure[0], start=1):
            yield from structure_attachments(
                part, f"{part_id}.{number}" if part_id else str(number)
            )
        return
    main, sub = (_text(value) for value in structure[:2])
    params = _pairs(structure[2] if len(structure) > 2 else None)
    disposition = next(
        (
            item
            for item in structure[7:]
            if isinstance(item, tuple) and item and isinstance(item[0], bytes)
        ),
        None,
    )
    kind = _text(disposition[0]) if disposition else ""
    filename = _pairs(disposition[1] if disposition and len(disposition) > 1 else None).get(
        "filename"
    ) or params.get("name")
    if kind != "attachment" and (kind == "inline" or main == "text" or not filename):
        return
    size = structure[6] if len(structure) > 6 and isinstance(structure[6], int) else 0
    yield AttachmentInfo(
        part_id=part_id or "1",
        filename=filename,
        content_type=f"{main}/{sub}",
        size=size,
        content_id=None,
        inline=False,
    )


def _text(value: object) -> str:
    return value.decode("utf-8", "replace").lower() if isinstance(value, bytes) else ""


def _pairs(values: object) -> dict[str, str]:
    """Read a parenthesised attribute/value list, as BODYSTRUCTURE gives parameters."""
    if not isinstance(values, tuple | list):
        return {}
    items = list(values)
    return {
        _text(key): value.decode("utf-8", "replace") if isinstance(value, bytes) else ""
        for key, value in zip(items[::2], items[1::2], strict=False)
    }


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _optional_datetime(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None
