"""The watcher's supervisor in this process, against the suite's Dovecot, Redis and both
databases: its share of the mailboxes, the pace of its connections, OAuth tokens."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import respx
from pydantic import ValidationError
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import AuthType, Mailbox, utcnow
from app.imap import Security
from app.security import SecretBox
from tests.support.dovecot import Dovecot, DovecotInstances
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import FaultProxy
from tests.support.login_catcher import login_catcher
from tests.support.oauth_rig import (
    GOOGLE_TOKEN_URL,
    configure_gmail,
    google_tokens,
    oauth_dovecot,
    sign_jwt,
)
from tests.support.redis_queue import redis_url_through
from tests.support.secret_watch import SecretKind, register_secret
from tests.support.watching import supervising, watching_records

SECONDS = 30


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not within {SECONDS} s: {what}"
        await asyncio.sleep(0.05)


def test_each_watcher_takes_up_to_its_share_and_no_mailbox_twice(
    engine: Engine, watch_settings: Settings, add_mailbox: MailboxFactory, dovecot: Dovecot
) -> None:
    mailboxes = {add_mailbox(dovecot.add_user()) for _ in range(3)}
    capped = watch_settings.model_copy(update={"watch_max_connections": 2})

    async def scenario() -> None:
        async with supervising(capped, engine) as first:
            await eventually(lambda: len(first.watched) == 2, "the first watcher takes two")
            async with supervising(capped, engine) as second:
                await eventually(lambda: len(second.watched) == 1, "the second takes the third")
                await asyncio.sleep(3 * capped.watch_refresh_seconds)  # some heartbeats later
                assert first.watched | second.watched == mailboxes
                assert not first.watched & second.watched, "a mailbox is watched twice"

    asyncio.run(scenario())


def test_connections_open_at_the_connect_rate(
    engine: Engine,
    watch_settings: Settings,
    add_mailbox: MailboxFactory,
    dovecot: Dovecot,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for _ in range(3):
        add_mailbox(dovecot.add_user())
    paced = watch_settings.model_copy(update={"watch_connect_rate": 1.0})
    caplog.set_level(logging.INFO, logger="app.watch.supervisor")

    async def scenario() -> float:
        started = time.monotonic()
        async with supervising(paced, engine):
            await eventually(lambda: len(watching_records(caplog)) == 3, "three watches")
            return time.monotonic() - started

    # One connection per second: the third cannot begin before two seconds have passed.
    assert asyncio.run(scenario()) >= 2.0


def test_an_expiring_oauth_token_is_refreshed_and_the_watch_reconnects(
    engine: Engine,
    watch_settings: Settings,
    add_mailbox: MailboxFactory,
    dovecot_instances: DovecotInstances,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwt_dovecot = oauth_dovecot(dovecot_instances)
    settings = watch_settings.model_copy(update={"imap_ca_file": jwt_dovecot.ca_file})
    secrets = SecretBox.from_settings(settings)
    configure_gmail(engine, secrets)
    user = jwt_dovecot.add_user()
    mailbox_id = add_mailbox(
        user,
        port=jwt_dovecot.tls_port,
        auth_type=AuthType.OAUTH,
        provider="gmail",
        password_enc=None,
        access_token_enc=secrets.encrypt(sign_jwt(user.name, expires_in=600)),
        refresh_token_enc=secrets.encrypt(
            register_secret(SecretKind.REFRESH_TOKEN, "1//refresh-one", "stored")
        ),
        token_expires_at=utcnow() + timedelta(minutes=10),
    )
    fresh = sign_jwt(user.name)
    caplog.set_level(logging.INFO, logger="app.watch.supervisor")

    async def scenario(google: respx.Router) -> None:
        token_route = google.post(GOOGLE_TOKEN_URL).respond(200, json=google_tokens(fresh))
        async with supervising(settings, engine):
            await eventually(lambda: len(watching_records(caplog)) == 1, "watching")
            assert not token_route.called, "a token valid for ten minutes was refreshed"
            with session_scope(engine) as session:  # four minutes left, as time passes
                mailbox = session.get(Mailbox, mailbox_id)
                assert mailbox is not None
                mailbox.token_expires_at = utcnow() + timedelta(minutes=4)
            await eventually(
                lambda: len(watching_records(caplog)) == 2, "watching with a refreshed token"
            )
            assert token_route.call_count == 1

    with respx.mock(assert_all_called=False) as google:
        asyncio.run(scenario(google))
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None and mailbox.access_token_enc is not None
        assert secrets.decrypt(mailbox.access_token_enc) == fresh
        assert mailbox.token_expires_at is not None
        assert mailbox.token_expires_at > utcnow() + timedelta(minutes=55)


def test_a_stored_plain_mailbox_is_not_watched_while_plain_imap_is_off(
    engine: Engine, watch_settings: Settings, add_mailbox: MailboxFactory, dovecot: Dovecot
) -> None:
    """IMAP_ALLOW_PLAINTEXT off: the watcher, like the sync, sends no credential in clear."""
    refusing = watch_settings.model_copy(update={"imap_allow_plaintext": False})
    with login_catcher() as catcher:
        mailbox_id = add_mailbox(
            dovecot.add_user(), host="127.0.0.1", port=catcher.port, security=Security.NONE
        )

        async def scenario() -> None:
            async with supervising(refusing, engine) as supervisor:
                await asyncio.sleep(10 * refusing.watch_refresh_seconds)  # ten refreshes
                assert mailbox_id not in supervisor.watched

        asyncio.run(scenario())
        assert catcher.connections == 0, "the watcher connected in clear"


def test_a_watch_lease_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ValidationError, match="WATCH_LEASE_SECONDS"):
        Settings(watch_refresh_seconds=5, watch_lease_seconds=8)


def test_a_watcher_started_while_redis_is_down_watches_once_it_answers(
    *,
    engine: Engine,
    watch_settings: Settings,
    add_mailbox: MailboxFactory,
    dovecot: Dovecot,
    caplog: pytest.LogCaptureFixture,
    redis_proxy: FaultProxy,
) -> None:
    add_mailbox(dovecot.add_user())
    caplog.set_level(logging.INFO, logger="app.watch.supervisor")
    proxied = watch_settings.model_copy(update={"redis_url": redis_url_through(redis_proxy)})

    async def scenario(proxy: FaultProxy) -> None:
        async with supervising(proxied, engine):
            await eventually(
                lambda: any(r.getMessage() == "watch.redis_unavailable" for r in caplog.records),
                "the watcher waits for Redis",
            )
            assert not watching_records(caplog), "watching before a change could be queued"
            proxy.heal()
            await eventually(lambda: len(watching_records(caplog)) == 1, "watching")

    redis_proxy.take_down()
    asyncio.run(scenario(redis_proxy))


def test_watch_sessions_to_one_host_stop_at_its_cap_across_watchers(
    engine: Engine,
    watch_settings: Settings,
    add_mailbox: MailboxFactory,
    dovecot: Dovecot,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailboxes = {add_mailbox(dovecot.add_user()) for _ in range(3)}
    capped = watch_settings.model_copy(update={"watch_max_connections_per_host": 2})
    caplog.set_level(logging.INFO, logger="app.watch.supervisor")

    def refused() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "watch.no_connection_slot"]

    async def scenario() -> frozenset[int]:
        async with supervising(capped, engine) as first, supervising(capped, engine) as second:
            await eventually(
                lambda: len(watching_records(caplog)) == 2 and bool(refused()),
                "two watches begin and the third finds no slot",
            )
            await asyncio.sleep(3 * capped.watch_refresh_seconds)  # some refreshes later
            assert len(watching_records(caplog)) == 2, "no third watch began"
            return first.watched | second.watched

    watched = asyncio.run(scenario())

    assert len(watched) == 2
    assert {record.__dict__["mailbox_id"] for record in refused()} == mailboxes - watched
