"""What a user could run instead of us, measured the same way: raw Python IMAP clients.

Bodies are fetched with BODY.PEEK[] (so nothing is marked read) in batches of
500 UIDs over implicit TLS (plain IMAP in the per-server rows) and dropped on
arrival: no parsing, no storage.
That is the practical ceiling for a Python client on this server, and the
reference the sync engine's throughput is divided by.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from time import perf_counter
from typing import Any

from imapclient import IMAPClient

from bench.job import Job, Measurement, Server, median_run

FETCH_BATCH = 500
_STATUS_ITEMS = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"HIGHESTMODSEQ"]
_CHANGES = ("FETCH", "VANISHED")  # what a QRESYNC SELECT reports of a changed folder


def _tls_context(server: Server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_file)


def _uid_batches(uids: Sequence[int]) -> Iterator[Sequence[int]]:
    ordered = sorted(uids)
    for start in range(0, len(ordered), FETCH_BATCH):
        yield ordered[start : start + FETCH_BATCH]


def imapclient_session(server: Server) -> IMAPClient:
    if server.plain:
        client = IMAPClient(server.host, port=server.port, ssl=False)
    else:
        client = IMAPClient(
            server.host, port=server.port, ssl=True, ssl_context=_tls_context(server)
        )
    client.login(server.username, server.password)
    return client


def fetch_with_imaplib(job: Job) -> Measurement:
    """UID FETCH every message of the job's folders with the standard library."""
    return median_run([_fetch_with_imaplib(job.server, job.folders) for _ in range(job.repeat)])


def _fetch_with_imaplib(server: Server, folders: Sequence[str]) -> Measurement:
    messages = size = 0
    started = perf_counter()
    imap = (
        imaplib.IMAP4(server.host, server.port)
        if server.plain
        else imaplib.IMAP4_SSL(server.host, server.port, ssl_context=_tls_context(server))
    )
    imap.login(server.username, server.password)
    for folder in folders:
        imap.select(folder, readonly=True)
        _, found = imap.uid("SEARCH", "ALL")
        uids = [int(uid) for uid in found[0].split()]
        for batch in _uid_batches(uids):
            _, data = imap.uid("FETCH", ",".join(map(str, batch)), "(BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):  # (b'1 (UID 1 BODY[] {size}', literal)
                    messages += 1
                    size += len(item[1])
    imap.logout()
    return Measurement(perf_counter() - started, messages, size, command_count=imap.tagnum)


def fetch_with_imapclient(job: Job) -> Measurement:
    """The same fetch through IMAPClient.fetch, whose parser builds a dict per message."""
    return median_run([_fetch_with_imapclient(job.server, job.folders) for _ in range(job.repeat)])


def _fetch_with_imapclient(server: Server, folders: Sequence[str]) -> Measurement:
    messages = size = 0
    started = perf_counter()
    client = imapclient_session(server)
    for folder in folders:
        client.select_folder(folder, readonly=True)
        for batch in _uid_batches(client.search("ALL")):
            response: dict[int, dict[bytes, Any]] = client.fetch(batch, [b"BODY.PEEK[]"])
            for data in response.values():
                messages += 1
                size += len(data[b"BODY[]"])
    client.logout()
    return Measurement(perf_counter() - started, messages, size, command_count=client._imap.tagnum)


def check_with_imapclient(job: Job) -> Measurement:
    """Ask STATUS of each folder once: the least a client can do to see that nothing changed."""

    def status(client: IMAPClient, folder: str) -> None:
        client.folder_status(folder, _STATUS_ITEMS)

    return _timed_checks(job, "STATUS", status)


def check_with_qresync(job: Job) -> Measurement:
    """EXAMINE each folder with QRESYNC and the state a last sync kept (RFC 7162 3.2.5).

    The server answers an unchanged folder with its status alone, no FETCH and no
    VANISHED: the resync check the issue measures us against. The UIDVALIDITY and
    HIGHESTMODSEQ a client would have kept are read before the clock starts.
    """
    known = _kept_state(job.server, job.folders)

    def enable(client: IMAPClient) -> None:
        client.enable("QRESYNC")
        client._imap.is_readonly = True  # imaplib refuses to go on after READ-ONLY otherwise

    def examine(client: IMAPClient, folder: str) -> None:
        uidvalidity, modseq = known[folder]
        typ, data = client._imap._simple_command(
            "EXAMINE", client._normalise_folder(folder), f"(QRESYNC ({uidvalidity} {modseq}))"
        )
        if typ != "OK":
            raise RuntimeError(f"EXAMINE {folder} (QRESYNC) failed: {data!r}")
        changes = [client._imap.untagged_responses.pop(kind, None) for kind in _CHANGES]
        if any(changes):
            raise RuntimeError(f"{folder} changed since its state was read")

    return _timed_checks(job, "EXAMINE", examine, start=enable)


def _timed_checks(
    job: Job,
    command: str,
    check: Callable[[IMAPClient, str], None],
    *,
    start: Callable[[IMAPClient], None] | None = None,
) -> Measurement:
    """Log in, `start` the session, `check` each folder, log out; the median of job.repeat runs."""
    runs: list[Measurement] = []
    for _ in range(job.repeat):
        started = perf_counter()
        client = imapclient_session(job.server)
        if start is not None:
            start(client)
        for folder in job.folders:
            check(client, folder)
        client.logout()
        runs.append(
            Measurement(
                perf_counter() - started,
                messages=0,
                bytes=0,
                command_count=client._imap.tagnum,
                folder_commands=len(job.folders),
                commands=[command] * len(job.folders),
            )
        )
    return median_run(runs)


def _kept_state(server: Server, folders: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Read each folder's UIDVALIDITY and HIGHESTMODSEQ, as a client keeps them after a sync."""
    client = imapclient_session(server)
    try:
        return {
            folder: (int(status[b"UIDVALIDITY"]), int(status[b"HIGHESTMODSEQ"]))
            for folder in folders
            for status in [client.folder_status(folder, _STATUS_ITEMS)]
        }
    finally:
        client.logout()


def check_every_mailbox(job: Job) -> Measurement:
    """Log in, STATUS each folder and log out of every mailbox, as many at once as the workers.

    The reference of a no-change cycle: what the IMAP server alone costs for
    the same logins over the same number of connections, with nothing stored.
    """
    fleet = job.fleet
    assert fleet is not None
    checks = [
        replace(job, server=replace(job.server, username=name), repeat=1)
        for name in fleet.usernames
    ]
    errors = 0
    started = perf_counter()
    with ThreadPoolExecutor(fleet.connections_per_host) as pool:
        futures = [pool.submit(check_with_imapclient, check) for check in checks]
        for future in futures:
            if future.exception() is not None:
                errors += 1
    seconds = perf_counter() - started
    return Measurement(
        seconds,
        0,
        0,
        figures={"mailboxes": len(checks), "succeeded": len(checks) - errors, "errors": errors},
    )
