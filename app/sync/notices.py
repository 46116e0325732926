"""Tell a mailbox's owner when it stops working for long, and when it works again.

    credentials refused ............ `mailbox.credentials_invalid` at once (the run's
                                     own rule, `app.sync.service`); not counted here
    any other failure (TLS, unreachable, blocked host, server unavailable...)
      first of an episode .......... failing_since = now, nobody told yet
      failing since >= FAILING_NOTICE_AFTER_SECONDS, not told
                                 ... `mailbox.connection_failing`, failing_noticed_at = now
      already told ................. nothing (one notice per episode)
    a run succeeds ................. episode over; `mailbox.connection_restored` if told
    the database did not answer, or no connection slot (the budget full or away)
                                 ... the service's failure, not the mailbox's: nothing

Transient failures are retried within the sync interval, so the notice goes out
with the first failed run past the threshold. Both notices carry what the
credential notice carries: `reconnect_url` (REAUTH_URL_TEMPLATE) where relevant.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from app.config import Settings
from app.connection_budget import ConnectionBudgetUnavailableError, NoConnectionSlotError
from app.db.models import Mailbox
from app.db.repositories.events import record_event
from app.sync.errors import DatabaseUnavailableError

CONNECTION_FAILING = "mailbox.connection_failing"
CONNECTION_RESTORED = "mailbox.connection_restored"
# Failures of the service itself (its database, its connection budget), not of the mailbox.
_SERVICE_FAILURES = frozenset(
    {
        DatabaseUnavailableError.code,
        NoConnectionSlotError.code,
        ConnectionBudgetUnavailableError.code,
    }
)


def reconnect_url(settings: Settings, mailbox_id: int | None) -> str | None:
    """Return the CRM page where the owner fixes the mailbox, from REAUTH_URL_TEMPLATE."""
    if settings.reauth_url_template is None or mailbox_id is None:
        return None
    return settings.reauth_url_template.replace("{mailbox_id}", str(mailbox_id))


def note_failure(
    session: Session,
    mailbox: Mailbox,
    settings: Settings,
    now: datetime,
    *,
    code: str,
    message: str,
) -> None:
    """Count a failed run (not a credential refusal) toward the episode; tell it once it lasts."""
    if code in _SERVICE_FAILURES:
        return
    if mailbox.failing_since is None:
        mailbox.failing_since = now
    lasted = now - mailbox.failing_since
    if mailbox.failing_noticed_at is not None or lasted < timedelta(
        seconds=settings.failing_notice_after_seconds
    ):
        return
    mailbox.failing_noticed_at = now
    record_event(
        session,
        CONNECTION_FAILING,
        mailbox,
        {
            "error_code": code,
            "message": message,
            "failing_since": mailbox.failing_since.isoformat(),
            "reconnect_url": reconnect_url(settings, mailbox.id),
        },
    )


def note_success(session: Session, mailbox: Mailbox) -> None:
    """End the failure episode; tell its recovery if its failure was told."""
    if mailbox.failing_noticed_at is not None and mailbox.failing_since is not None:
        record_event(
            session,
            CONNECTION_RESTORED,
            mailbox,
            {"failing_since": mailbox.failing_since.isoformat()},
        )
    mailbox.failing_since = None
    mailbox.failing_noticed_at = None
