"""Connections that break under the sync: each fault fails the run as a network failure, tells
nobody about credentials, and the next run stores exactly the server's mail, once.

The mailbox reaches Dovecot through a `FaultProxy`: over TLS when the fault is a byte count,
over the plain port when it waits for a command it must read.
"""

from __future__ import annotations

from sqlalchemy import Engine

from app.config import Settings
from app.imap import Security
from tests.support.crash_checks import assert_announced
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import READ_TIMEOUT, Fault, FaultProxy
from tests.support.mailgen import append_many, expected_message_ids
from tests.support.mirror import (
    assert_failed_on_network,
    assert_mirrors_server,
    stored_links,
    sync,
    sync_to_completion,
)

FIRST_INBOX, FIRST_SENT = 400, 40
# Far past the greeting, login, listing and searches (a few kB), well before the end of the
# first sync's FETCH answers (about 200 kB of mail): the cut lands after a few batches.
MID_FETCH = 80_000


def test_a_connection_dropped_mid_fetch_fails_the_run_and_the_rerun_stores_each_message_once(
    engine: Engine,
    fault_settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tls_proxy: FaultProxy,
) -> None:
    append_many(mail_user, "INBOX", "in", FIRST_INBOX)
    append_many(mail_user, "Sent", "out", FIRST_SENT)
    mailbox_id = add_mailbox(mail_user, port=tls_proxy.port)
    tls_proxy.arm(Fault.cut_after(MID_FETCH))

    result = sync(engine, fault_settings, mailbox_id)

    assert tls_proxy.strikes == 1
    assert result.error_code == "connection_lost"
    assert_failed_on_network(engine, mailbox_id, result)
    assert 0 < len(stored_links(engine, mailbox_id)) < FIRST_INBOX, "cut after some batches"
    tls_proxy.heal()
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)


def test_a_stall_past_the_read_timeout_fails_the_run_and_the_rerun_completes(
    engine: Engine,
    fault_settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tls_proxy: FaultProxy,
) -> None:
    append_many(mail_user, "INBOX", "in", FIRST_INBOX)
    mailbox_id = add_mailbox(mail_user, port=tls_proxy.port)
    tls_proxy.arm(Fault.stall_after(MID_FETCH, seconds=3 * READ_TIMEOUT))

    result = sync(engine, fault_settings, mailbox_id)

    assert tls_proxy.strikes == 1
    assert result.error_code == "timeout"
    assert_failed_on_network(engine, mailbox_id, result)
    tls_proxy.heal()
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)


def test_a_connection_cut_during_an_incremental_fetch_loses_and_repeats_no_new_mail(
    engine: Engine,
    fault_settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    plain_proxy: FaultProxy,
) -> None:
    append_many(mail_user, "INBOX", "in", 60)
    mailbox_id = add_mailbox(mail_user, port=plain_proxy.port, security=Security.NONE)
    sync_to_completion(engine, fault_settings, mailbox_id)
    new_mail, new_sent = 150, 10  # three batches of 50 in INBOX
    append_many(mail_user, "INBOX", "new", new_mail)
    append_many(mail_user, "Sent", "new-out", new_sent)
    # The second body FETCH of the run: the first batch of new mail is stored by then.
    plain_proxy.arm(Fault.cut_on(b"UID FETCH", containing=b"BODY.PEEK[]", nth=2))

    result = sync(engine, fault_settings, mailbox_id)

    assert plain_proxy.strikes == 1
    assert_failed_on_network(engine, mailbox_id, result)
    assert len(stored_links(engine, mailbox_id)) == 60 + fault_settings.sync_batch_size
    plain_proxy.heal()
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)
    # Each new email was announced once: by the run that stored it.
    new = expected_message_ids("new", new_mail) | expected_message_ids("new-out", new_sent)
    assert_announced(engine, mailbox_id, new)


def test_a_connection_cut_during_login_is_a_network_failure_not_a_credential_one(
    engine: Engine,
    fault_settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    plain_proxy: FaultProxy,
) -> None:
    append_many(mail_user, "INBOX", "in", 30)
    mailbox_id = add_mailbox(mail_user, port=plain_proxy.port, security=Security.NONE)
    plain_proxy.arm(Fault.cut_on(b"LOGIN"))

    result = sync(engine, fault_settings, mailbox_id)

    assert plain_proxy.strikes == 1
    assert_failed_on_network(engine, mailbox_id, result)
    assert stored_links(engine, mailbox_id) == {}
    plain_proxy.heal()
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)
