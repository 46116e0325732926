"""Change one account of a test IMAP server the way another mail client would, over IMAP only.

The same operations drive every server of the rig (Dovecot, Cyrus, Courier): a scenario
written against `ImapAccount` runs unchanged on each. What a server lacks is worked
around here, and said where: Courier has no MOVE (RFC 6851), so `move` copies,
then expunges the originals with UID EXPUNGE (RFC 4315).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from imapclient import IMAPClient

_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_COPYUID = re.compile(rb"\[COPYUID \d+ ([0-9:,]+) ([0-9:,]+)\]")


class ImapAccountError(RuntimeError):
    """The server refused a change the test asked for, or answered without a UID to report."""


@dataclass
class ImapAccount:
    """One account on a test server, reached on its plain (non-TLS) loopback port."""

    name: str
    password: str

    def address(self) -> tuple[str, int]:
        """Return the host and plain port of the account's server."""
        raise NotImplementedError

    def client(self) -> IMAPClient:
        """Return a logged-in IMAPClient on the plain port; the caller closes it."""
        host, port = self.address()
        client = IMAPClient(host, port=port, ssl=False, timeout=10)
        try:
            client.login(self.name, self.password)
        except BaseException:
            client.shutdown()
            raise
        return client

    @contextmanager
    def session(self, folder: str | None = None) -> Iterator[IMAPClient]:
        """A logged-in client (with `folder` selected), logged out on leaving the block."""
        client = self.client()
        try:
            if folder is not None:
                client.select_folder(folder)
            yield client
        finally:
            try:
                client.logout()
            except (IMAPClient.Error, OSError):  # already dropped; keep the first error
                client.shutdown()

    def append(
        self,
        folder: str,
        message: bytes,
        *,
        flags: Sequence[str] = (),
        date: dt.datetime | None = None,
    ) -> int:
        """Store a message with IMAP APPEND and return its UID (APPENDUID, RFC 4315)."""
        with self.session() as client:
            response: bytes = client.append(folder, message, flags=tuple(flags), msg_time=date)
        match = _APPENDUID.search(response)
        if match is None:
            raise ImapAccountError(f"APPEND gave no APPENDUID: {response!r}")
        return int(match.group(1))

    def add_flags(self, folder: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        with self.session(folder) as client:
            client.add_flags(list(uids), list(flags), silent=True)

    def remove_flags(self, folder: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        with self.session(folder) as client:
            client.remove_flags(list(uids), list(flags), silent=True)

    def move(self, folder: str, uids: Sequence[int], target: str) -> list[int]:
        """Move with UID MOVE (RFC 6851), else COPY and UID EXPUNGE; return the new UIDs.

        The new UIDs come in the order of `uids`.
        """
        with self.session(folder) as client:
            if client.has_capability("MOVE"):
                return _copy_or_move(client, b"MOVE", uids, target)
            moved = _copy_or_move(client, b"COPY", uids, target)
            client.add_flags(list(uids), ["\\Deleted"], silent=True)
            client.uid_expunge(list(uids))
            return moved

    def copy(self, folder: str, uids: Sequence[int], target: str) -> list[int]:
        """Copy with UID COPY; return the new UIDs in the order of `uids`."""
        with self.session(folder) as client:
            return _copy_or_move(client, b"COPY", uids, target)

    def expunge(self, folder: str, uids: Sequence[int]) -> None:
        """Flag the messages \\Deleted and UID EXPUNGE exactly those."""
        with self.session(folder) as client:
            client.add_flags(list(uids), ["\\Deleted"], silent=True)
            client.uid_expunge(list(uids))

    def create_folder(self, name: str) -> None:
        with self.session() as client:
            client.create_folder(name)

    def delete_folder(self, name: str) -> None:
        with self.session() as client:
            client.delete_folder(name)

    def rename_folder(self, old: str, new: str) -> None:
        with self.session() as client:
            client.rename_folder(old, new)

    def uids(self, folder: str) -> list[int]:
        with self.session() as client:
            client.select_folder(folder, readonly=True)
            found: list[int] = client.search("ALL")
        return sorted(found)

    def flags(self, folder: str) -> dict[int, set[str]]:
        """Return each message's stored flags, e.g. {3: {"\\Seen"}}; \\Recent is per session."""
        with self.session() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            fetched: dict[int, tuple[bytes, ...]] = client.get_flags(uids) if uids else {}
        return {
            uid: {flag.decode() for flag in flags} - {"\\Recent"} for uid, flags in fetched.items()
        }

    def uidvalidity(self, folder: str) -> int:
        with self.session() as client:
            status: dict[bytes, int] = client.folder_status(folder, [b"UIDVALIDITY"])
        return status[b"UIDVALIDITY"]


def _copy_or_move(
    client: IMAPClient, command: bytes, uids: Sequence[int], target: str
) -> list[int]:
    """Run UID COPY or UID MOVE and map each source UID through COPYUID (RFC 4315).

    imapclient returns neither response text, so the command goes out raw: COPY puts
    COPYUID in its tagged OK, MOVE in an untagged OK before the expunges.
    """
    client._imap.untagged_responses.pop("OK", None)
    uid_set = ",".join(str(uid) for uid in uids).encode()
    status, tagged = client._raw_command(
        command, [uid_set, client._normalise_folder(target)], uid=True
    )
    lines = [*tagged, *client._imap.untagged_responses.pop("OK", [])]
    text = b" ".join(line for line in lines if isinstance(line, bytes))
    match = _COPYUID.search(text)
    if status != "OK" or match is None:
        raise ImapAccountError(f"UID {command.decode()} to {target!r} failed: {text!r}")
    mapping = dict(
        zip(_expand_uid_set(match.group(1)), _expand_uid_set(match.group(2)), strict=True)
    )
    return [mapping[uid] for uid in uids]


def _expand_uid_set(uid_set: bytes) -> list[int]:
    uids: list[int] = []
    for part in uid_set.decode().split(","):
        first, _, last = part.partition(":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids
