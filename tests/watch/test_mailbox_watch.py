"""Watching one mailbox on the suite's real Dovecot: NOTIFY, IDLE with polling, reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from app.backoff import Backoff
from app.imap.aio_client import AsyncConnection
from app.imap.aio_connect import connect_async
from app.imap.config import ConnectOptions
from app.imap.errors import AuthenticationFailed
from app.watch.mailbox_watch import WatchMode, WatchTiming, watch_mailbox
from tests.support.dovecot import MailUser
from tests.support.imap_config import config_for
from tests.support.mailgen import make_message

FOLDERS = ("INBOX", "Archive", "Sent")
# Dovecot announces within about a second; the margin absorbs a loaded machine.
CHANGE_WAIT = 20.0
FAST = WatchTiming(poll_seconds=0.5, idle_renew_seconds=60, reconnect=Backoff(0.1, 0.2))


class Changes:
    """What the watch reported, in order, for a test to wait on."""

    def __init__(self) -> None:
        self.reported: asyncio.Queue[frozenset[str]] = asyncio.Queue()
        self.sessions: asyncio.Queue[WatchMode] = asyncio.Queue()

    async def __call__(self, folders: frozenset[str]) -> None:
        await self.reported.put(folders)

    async def watching(self, mode: WatchMode) -> None:
        await self.sessions.put(mode)

    async def next_with(self, folder: str, trigger: Callable[[], object]) -> frozenset[str]:
        """Run `trigger` in a thread; return the first report naming `folder`."""
        await asyncio.to_thread(trigger)
        seen: list[frozenset[str]] = []
        try:
            async with asyncio.timeout(CHANGE_WAIT):
                while folder not in (report := await self.reported.get()):
                    seen.append(report)
        except TimeoutError:
            raise AssertionError(f"no change of {folder} reported; saw {seen}") from None
        return report


def watching(
    user: MailUser,
    options: ConnectOptions,
    changes: Changes,
    *,
    use_notify: bool = True,
    folders: tuple[str, ...] = FOLDERS,
) -> asyncio.Task[None]:
    async def connect() -> AsyncConnection:
        return await connect_async(config_for(user), options)

    return asyncio.create_task(
        watch_mailbox(
            connect, folders, changes, FAST, use_notify=use_notify, on_watching=changes.watching
        )
    )


async def session_watching(task: asyncio.Task[None], changes: Changes) -> WatchMode:
    """Wait until a session of the watch is watching; fail if the watch died first."""
    ready = asyncio.create_task(changes.sessions.get())
    await asyncio.wait({task, ready}, timeout=CHANGE_WAIT, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert ready.done(), f"the watch was not watching within {CHANGE_WAIT} s"
    return ready.result()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("use_notify", [True, False], ids=["notify", "idle-and-poll"])
def test_arrivals_in_inbox_and_another_folder_are_reported_by_folder(
    mail_user: MailUser, connect_options: ConnectOptions, use_notify: bool
) -> None:
    async def scenario() -> None:
        changes = Changes()
        task = watching(mail_user, connect_options, changes, use_notify=use_notify)
        assert await session_watching(task, changes) == ("notify" if use_notify else "idle")
        archive = await changes.next_with(
            "Archive", lambda: mail_user.append("Archive", make_message())
        )
        assert archive <= set(FOLDERS)
        inbox = await changes.next_with("INBOX", lambda: mail_user.append("INBOX", make_message()))
        assert inbox <= set(FOLDERS)
        await stop(task)

    asyncio.run(scenario())


def test_folders_without_inbox_or_notify_are_polled(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    async def scenario() -> None:
        changes = Changes()
        task = watching(
            mail_user, connect_options, changes, use_notify=False, folders=("Archive", "Sent")
        )
        assert await session_watching(task, changes) == "poll"
        sent = await changes.next_with("Sent", lambda: mail_user.append("Sent", make_message()))
        assert sent == {"Sent"}
        await stop(task)

    asyncio.run(scenario())


def test_a_flag_change_in_another_folder_is_reported(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    uid = mail_user.append("Sent", make_message())

    async def scenario() -> None:
        changes = Changes()
        task = watching(mail_user, connect_options, changes)
        await session_watching(task, changes)
        await changes.next_with("Sent", lambda: mail_user.add_flags("Sent", [uid], ["\\Seen"]))
        await stop(task)

    asyncio.run(scenario())


def test_a_kicked_watch_reconnects_and_reports_every_folder(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    async def scenario() -> None:
        changes = Changes()
        task = watching(mail_user, connect_options, changes)
        await session_watching(task, changes)
        caught_up = await changes.next_with("INBOX", mail_user.kick)
        assert caught_up == set(FOLDERS), "after a reconnect every folder needs a look"
        await session_watching(task, changes)
        await changes.next_with("Archive", lambda: mail_user.append("Archive", make_message()))
        await stop(task)

    asyncio.run(scenario())


def test_refused_credentials_end_the_watch(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    async def connect() -> AsyncConnection:
        return await connect_async(config_for(mail_user, password="wrong"), connect_options)

    async def scenario() -> None:
        await watch_mailbox(connect, FOLDERS, Changes(), FAST)

    with pytest.raises(AuthenticationFailed):
        asyncio.run(scenario())
