"""The watcher on every server of the rig: a supervisor in this process watches a synced
mailbox, new mail in INBOX and in Sent is queued by it, synced (the queued job run here,
as the worker runs it) and announced within seconds, with no cron run.

Each server watches its own way: Dovecot and the legacy Dovecot by NOTIFY, Cyrus and
Courier by IDLE on INBOX with STATUS polls of Sent (neither offers NOTIFY), a Dovecot
offering neither by polling. Cyrus without `idled` and Courier without enhanced IDLE (the
rig's, and their packages' defaults) announce arrivals during IDLE only once a minute.
Cyrus, Courier and the Dovecots without push run on SQLite only, to keep the matrix short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from arq import ArqRedis
from sqlalchemy import Engine

from app.backoff import Backoff
from app.config import Settings
from app.db.models import SyncTrigger
from app.imap import Security
from app.imap.aio_client import AsyncConnection
from app.imap.aio_connect import connect_async
from app.imap.config import ConnectOptions, ImapConfig
from app.job_queue import create_queue, take_pending_folders
from app.sync.service import sync_mailbox
from app.watch.mailbox_watch import WatchMode, WatchTiming, watch_mailbox
from tests.support.debian_servers import Courier, PrivateServers
from tests.support.dovecot import DovecotInstances
from tests.support.factories import MailboxFactory
from tests.support.imap_account import ImapAccount
from tests.support.mailgen import make_message
from tests.support.server_matrix import NOW, MatrixServer, append, matrix_server
from tests.support.snapshot import received_in, run_triggers
from tests.support.watching import supervising, watching_records

SECONDS = 30  # what "within seconds" may take on a loaded 2-core machine
# Well below the minute a server that idles without push takes, well above the poll interval.
IDLE_WAIT = 20

# How each server is watched: what it offers after login decides.
WATCH_MODES: dict[str, WatchMode] = {
    "dovecot": "notify",
    "legacy_dovecot": "notify",
    "cyrus": "idle",
    "courier": "idle",
    "pushless_dovecot": "poll",
}
WATCH_MATRIX = pytest.mark.parametrize(
    ("server_name", "databases"),
    [
        ("dovecot", "postgresql"),
        ("legacy_dovecot", "sqlite"),
        ("cyrus", "sqlite"),
        ("courier", "sqlite"),
        ("pushless_dovecot", "sqlite"),
    ],
    indirect=["databases"],
)


@pytest.fixture
def server(
    server_name: str, request: pytest.FixtureRequest, dovecot_instances: DovecotInstances
) -> MatrixServer:
    if server_name == "pushless_dovecot":
        pushless = dovecot_instances.get(push=False)
        # Its TLS certificate comes from a CA of its own: the test settings trust another.
        plain = {"port": pushless.plain_port, "security": Security.NONE}
        return MatrixServer(
            server_name, pushless.add_user, "", "/", condstore=True, connection=plain
        )
    return matrix_server(server_name, request)


async def sync_queued_until(
    engine: Engine,
    settings: Settings,
    queue: ArqRedis,
    mailbox_id: int,
    folder: str,
) -> None:
    """Run the watcher's queued syncs, as the worker's `sync_job` does, until `folder`'s
    mail is announced; fail after SECONDS naming the folders that were queued."""
    deadline = time.monotonic() + SECONDS
    queued: list[frozenset[str]] = []
    while received_in(engine, mailbox_id, folder) == 0:
        assert time.monotonic() < deadline, (
            f"mail in {folder} was not announced within {SECONDS} s; the watcher queued {queued}"
        )
        folders = await take_pending_folders(queue, mailbox_id)
        if not folders:
            await asyncio.sleep(0.1)
            continue
        queued.append(folders)
        result = await asyncio.to_thread(
            sync_mailbox, engine, mailbox_id, settings, trigger=SyncTrigger.WATCH, folders=folders
        )
        assert result is not None and result.complete, f"the watched sync of {folders} failed"


@WATCH_MATRIX
def test_new_mail_is_watched_synced_and_announced_on_every_server(
    engine: Engine,
    watch_settings: Settings,
    server: MatrixServer,
    add_mailbox: MailboxFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = server.add_user()
    mailbox_id = add_mailbox(user, **server.connection)
    first = sync_mailbox(engine, mailbox_id, watch_settings)
    assert first is not None and first.complete, "the first sync did not complete"
    caplog.set_level(logging.INFO, logger="app.watch.supervisor")

    async def scenario() -> None:
        queue = await create_queue(watch_settings)
        try:
            async with supervising(watch_settings, engine):
                deadline = time.monotonic() + SECONDS
                while not watching_records(caplog):
                    assert time.monotonic() < deadline, f"{server.name}: not watching"
                    await asyncio.sleep(0.05)
                [watching] = watching_records(caplog)
                mode = WATCH_MODES[server.name]
                assert watching.__dict__["mode"] == mode, f"{server.name} watches by {mode}"
                for folder in ("INBOX", server.sent):
                    await asyncio.to_thread(append, user, folder, f"arrives in {folder}", NOW)
                    await sync_queued_until(engine, watch_settings, queue, mailbox_id, folder)
        finally:
            await queue.aclose()

    asyncio.run(scenario())
    assert received_in(engine, mailbox_id, "INBOX") == 1
    assert received_in(engine, mailbox_id, server.sent) == 1
    triggers = run_triggers(engine, mailbox_id)
    assert set(triggers[1:]) == {SyncTrigger.WATCH}, f"a sync not queued by the watcher: {triggers}"


def plain_config(user: ImapAccount) -> ImapConfig:
    host, port = user.address()
    return ImapConfig(
        host=host, port=port, security="none", username=user.name, password=user.password
    )


async def first_change_within(
    config: ImapConfig, folders: list[str], change: Callable[[], object]
) -> frozenset[str]:
    """Watch `folders` (polled every 0.5 s, IDLE kept 29 min); once watching, make `change`
    in a thread and return the first change reported; fail after IDLE_WAIT seconds."""
    timing = WatchTiming(poll_seconds=0.5, reconnect=Backoff(0.1, 0.2))

    async def connect() -> AsyncConnection:
        return await connect_async(config, ConnectOptions(allow_private_hosts=True))

    changes: asyncio.Queue[frozenset[str]] = asyncio.Queue()
    modes: asyncio.Queue[WatchMode] = asyncio.Queue()
    watch = asyncio.create_task(
        watch_mailbox(connect, folders, changes.put, timing, on_watching=modes.put)
    )
    try:
        async with asyncio.timeout(SECONDS):
            assert await modes.get() == "idle"
        await asyncio.to_thread(change)
        try:
            async with asyncio.timeout(IDLE_WAIT):
                return await changes.get()
        except TimeoutError:
            raise AssertionError(f"no change reported within {IDLE_WAIT} s") from None
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


@pytest.mark.parametrize("server_name", ["cyrus", "courier"])
def test_idle_on_a_server_that_checks_only_every_minute_reports_within_the_poll_interval(
    server_name: str, private_servers: PrivateServers
) -> None:
    """Cyrus without `idled` and Courier without IMAP_ENHANCEDIDLE look at a mailbox only
    every 60 s while it idles: a watch of INBOX alone re-issues IDLE every poll interval,
    and they report the new mail at once when IDLE begins."""
    server = private_servers.cyrus() if server_name == "cyrus" else private_servers.courier()
    user = server.add_user()
    arrives = make_message(subject="arrives")
    changed = asyncio.run(
        first_change_within(plain_config(user), ["INBOX"], lambda: user.append("INBOX", arrives))
    )
    assert changed == {"INBOX"}, f"{server_name}: new mail in INBOX reported as {changed}"


def test_mail_read_in_a_polled_folder_of_a_server_without_condstore_is_a_change(
    courier: Courier,
) -> None:
    """Courier offers no CONDSTORE, so STATUS has no HIGHESTMODSEQ: its UNSEEN count is
    what shows that mail in a folder watched by STATUS polls was read elsewhere."""
    user = courier.add_user()
    sent = "INBOX.Sent"
    uid = user.append(sent, make_message(subject="read elsewhere"))
    changed = asyncio.run(
        first_change_within(
            plain_config(user), ["INBOX", sent], lambda: user.add_flags(sent, [uid], ["\\Seen"])
        )
    )
    assert changed == {sent}, f"reading mail in {sent} was reported as {changed}"
