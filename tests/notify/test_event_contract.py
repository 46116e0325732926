"""Every event the code records is the `Event` the OpenAPI document publishes.

Real flows against Dovecot (new mail, a flag change and an
expunge, a folder renamed, one deleted, one renumbered, a password changed and
changed back, a server gone for a while, a secret no key opens, a webhook test)
fill the outbox; each row,
as the channels send it, must validate strictly against the published union.
"""

from __future__ import annotations

from typing import get_args

from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Event
from app.db.models import Event as OutboxEvent
from app.notify.envelope import WEBHOOK_TEST_EVENT, EventType
from app.notify.webhook_endpoints import record_test_event
from app.sync.folder_settings import FolderSyncSetting, save_folder_settings
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import FaultProxy
from tests.support.mailgen import make_message
from tests.support.snapshot import assert_in_contract, folder_row
from tests.support.webhook_receiver import register_endpoint

# Every type the outbox holds, and the one test event: the flows below record them all.
RECORDED_TYPES = {*get_args(EventType), WEBHOOK_TEST_EVENT}


def sync_until_done(engine: Engine, settings: Settings, mailbox_id: int, runs: int = 3) -> None:
    """Run syncs until one completes (a renumbered folder takes a second run)."""
    for _ in range(runs):
        result = sync_mailbox(engine, mailbox_id, settings)
        assert result is not None, "the lease was free"
        if result.complete:
            return


def enable_folder(engine: Engine, settings: Settings, mailbox_id: int, name: str) -> None:
    folder = folder_row(engine, mailbox_id, name)
    assert folder is not None and folder.id is not None
    save_folder_settings(engine, settings, mailbox_id, [FolderSyncSetting(folder.id, True)])


def outbox(engine: Engine) -> list[OutboxEvent]:
    with session_scope(engine) as session:
        return list(session.exec(select(Event).order_by(col(Event.id))))


def test_every_event_the_flows_record_matches_the_published_contract(
    engine: Engine,
    webhook_settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    settings = webhook_settings.model_copy(
        update={
            "failing_notice_after_seconds": 0.001,  # the second failed run tells
            "reauth_url_template": "https://crm.test/mailboxes/{mailbox_id}/reconnect",
        }
    )
    for folder in ("Projects", "Scratch"):
        mail_user.create_folder(folder)
    uids = [mail_user.append("INBOX", make_message(subject=f"in {n}")) for n in range(3)]
    mail_user.append("Projects", make_message(subject="project"))
    mailbox_id = add_mailbox(mail_user)
    sync_until_done(engine, settings, mailbox_id)
    enable_folder(engine, settings, mailbox_id, "Projects")
    mail_user.append("INBOX", make_message(subject="new"))  # the first sync announces none
    sync_until_done(engine, settings, mailbox_id)

    mail_user.add_flags("INBOX", uids[:1], [r"\Seen", r"\Flagged"])
    mail_user.expunge("INBOX", uids[1:2])
    sync_until_done(engine, settings, mailbox_id)
    mail_user.rename_folder("Projects", "Clients")
    mail_user.delete_folder("Scratch")
    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 1000)
    sync_until_done(engine, settings, mailbox_id)

    password = mail_user.password
    mail_user.set_password("changed-on-the-server")
    sync_until_done(engine, settings, mailbox_id, runs=1)
    mail_user.set_password(password)
    sync_until_done(engine, settings, mailbox_id)

    with FaultProxy(mail_user.dovecot.host, mail_user.dovecot.tls_port) as proxy:
        unreachable = add_mailbox(mail_user, port=proxy.port, owner_user_id="crm-user-2")
        proxy.take_down()
        sync_until_done(engine, settings, unreachable, runs=2)
        proxy.heal()
        sync_until_done(engine, settings, unreachable)

    unreadable = add_mailbox(mail_user, owner_user_id=None, password_enc="gAAAAA-not-a-token")
    sync_until_done(engine, settings, unreadable, runs=1)
    endpoint_id, _ = register_endpoint(engine, settings, "http://127.0.0.1:9/hook")
    with session_scope(engine) as session:
        record_test_event(session, endpoint_id)

    events = outbox(engine)
    for event in events:
        assert_in_contract(event)
    recorded = {event.type for event in events}
    assert recorded >= RECORDED_TYPES, f"the flows did not record {RECORDED_TYPES - recorded}"
