"""Select a folder, find messages, fetch and parse them in bounded batches.

Fetching never holds more than one batch of raw messages in memory, and a
message expunged between SEARCH and FETCH simply does not come back: it is
not an error (RFC 3501 7.4.2 lets the server omit it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from imapclient.response_parser import parse_fetch_response

from app.imap.connection import ImapConnection, imap_errors
from app.imap.errors import FolderNotFound, ProtocolError
from app.imap.fetch import uid_fetch
from app.imap.message import ParsedMessage, extract_part, normalise_flags, parse_message
from app.imap.search import SearchQuery, SearchQueryBuilder

DEFAULT_BATCH_SIZE = 200
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


def chunked(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """Split `items` into consecutive runs of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EmailManager:
    """Message operations on one session; every call is about the selected folder."""

    def __init__(self, connection: ImapConnection, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self._connection = connection
        self._client = connection.client
        self._client.normalise_times = False  # keep INTERNALDATE's zone: dates stay tz-aware
        self._batch_size = batch_size
        self._modseq_enabled = False
        self._fetch_items = [b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"]
        if connection.has("X-GM-EXT-1"):
            self._fetch_items.append(b"X-GM-MSGID")

    @staticmethod
    def query() -> SearchQueryBuilder:
        """Start a search query (see `app.imap.search`)."""
        return SearchQueryBuilder()

    def select_folder(self, name: str, *, readonly: bool = True) -> SelectedFolder:
        """Select `name` (EXAMINE when `readonly`, so fetching never sets \\Seen)."""
        self._enable_modseq()
        try:
            with imap_errors():
                raw = self._client.select_folder(name, readonly=readonly)
        except ProtocolError as exc:
            if not self._exists(name):
                raise FolderNotFound(f"folder {name!r} does not exist") from exc
            raise
        return SelectedFolder(
            name=name,
            uidvalidity=int(raw[b"UIDVALIDITY"]),
            uidnext=_optional_int(raw.get(b"UIDNEXT")),
            exists=int(raw.get(b"EXISTS", 0)),
            highestmodseq=_optional_int(raw.get(b"HIGHESTMODSEQ")),
        )

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

    def find(self, query: SearchQuery, *, limit: int | None = None) -> list[ParsedMessage]:
        """Search and fetch: the newest `limit` matches (all when None), oldest first."""
        uids = self.search(query)
        if limit is not None:
            uids = uids[-limit:] if limit else []
        return list(self.fetch(uids))

    def fetch(
        self, uids: Sequence[int], *, batch_size: int | None = None
    ) -> Iterator[ParsedMessage]:
        """Fetch and parse `uids` in batches, in the order given; vanished UIDs are skipped."""
        for batch in chunked(list(uids), batch_size or self._batch_size):
            parsed = self._fetch_parsed(batch)
            yield from (parsed[uid] for uid in batch if uid in parsed)

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
        for batch in chunked(list(uids), IDENTITY_BATCH_SIZE):
            with imap_errors():
                response: dict[int, dict[bytes, Any]] = self._client.fetch(batch, items)
            for uid in batch:
                data = response.get(uid)
                if data is None:
                    continue
                header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
                yield parse_message(
                    bytes(header or b""),
                    uid=uid,
                    flags=data.get(b"FLAGS", ()),
                    size=_optional_int(data.get(b"RFC822.SIZE")),
                    gm_msgid=_optional_int(data.get(b"X-GM-MSGID")),
                )

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
        imap = self._client._imap
        args = [f"{first_uid}:{last_uid}", f"({' '.join(items)})"]
        if modifiers:
            args.append(f"({' '.join(modifiers)})")
        with imap_errors():
            tag = imap._command("UID", "FETCH", *args)
            typ, data = imap._command_complete("FETCH", tag)
            self._client._checkok("fetch", typ, data)
            _typ, lines = imap._untagged_response(typ, data, "FETCH")
            parsed: dict[int, dict[bytes, Any]] = parse_fetch_response(lines, False, True)
        return parsed

    def raw(self, uid: int) -> bytes | None:
        """Return the RFC 5322 source of `uid`, or None when it is gone."""
        data = self._fetch_one(uid, [b"BODY.PEEK[]"])
        return None if data is None else bytes(data[b"BODY[]"])

    def attachment(self, uid: int, part_id: str) -> bytes | None:
        """Return the decoded content of body part `part_id` of `uid`, or None when it is gone."""
        mime, body = f"BODY[{part_id}.MIME]".encode(), f"BODY[{part_id}]".encode()
        data = self._fetch_one(uid, [b"BODY.PEEK" + mime[4:], b"BODY.PEEK" + body[4:]])
        if data is None or body not in data:
            return None
        return extract_part(bytes(data.get(mime) or b"") + bytes(data[body] or b""))

    def _fetch_one(self, uid: int, items: list[bytes]) -> dict[bytes, Any] | None:
        with imap_errors():
            response: dict[int, dict[bytes, Any]] = self._client.fetch([uid], items)
        return response.get(uid)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _optional_datetime(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None
