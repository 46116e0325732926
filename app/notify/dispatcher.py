"""Deliver the outbox to every channel at least once, recording each channel's state.

    event committed (dispatched_at NULL)
      | fan-out: one `event_delivery` row per channel (app.notify.channels), and
      | `dispatched_at` set, in one transaction
    delivery pending --claim (attempts+1, leased 2 min)--> sending
      sending -- delivered -------------------------------> succeeded
              -- transient failure, schedule not over ----> pending, next_attempt_at later
              -- permanent failure, or schedule over -----> failed (last_error says why)
              -- dispatcher died -------------------------> pending again when the lease ends

Who runs it: the arq worker, as a job queued after every sync (the events it
wrote are committed by then) and as a cron every 10 seconds, which also picks
up events the API wrote (credentials restored by a PATCH, webhook tests) and
retries that fell due. Runs may overlap: fan-out and claims are conditional
UPDATEs, so a delivery has one sender at a time, and a succeeded one is never
sent again. At least once, not exactly once: a dispatcher that dies between
a webhook's 2xx and recording it sends that message again, with the same
`webhook-id` so the receiver can drop the repeat. Login notifications are
exactly once: they are written in the transaction that marks their delivery.

One delivery never stops the others: whatever one raises (a secret no key
opens, a bug) is logged, and that delivery alone is retried on its schedule
with the error recorded; the pass goes on.

Webhook endpoints: every attempt is logged (`webhook_delivery`); a success
resets the endpoint's `failure_count`; a delivery that exhausts its retries
(about a day) with every attempt in between failing disables the endpoint,
as does a 410 Gone, and `disabled_reason` says why.

The outbox keeps events `EVENT_RETENTION_DAYS` (for SSE resumes); older ones
no channel still needs are deleted here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.config import Settings
from app.db import session_scope
from app.db.models import (
    DeliveryState,
    Event,
    Mailbox,
    MailboxStatus,
    WebhookDelivery,
    WebhookEndpoint,
    persisted_id,
    utcnow,
)
from app.db.repositories.event_deliveries import (
    ClaimedDelivery,
    add_deliveries,
    claim_due_deliveries,
    delete_expired_events,
    finish_delivery,
    mark_dispatched,
    undispatched_events,
)
from app.db.repositories.mailboxes import get_mailbox
from app.db.repositories.notifications import (
    acknowledge_mailbox_notifications,
    add_notification,
    get_notification_recipient,
    notification_recipients,
)
from app.db.repositories.webhooks import (
    add_webhook_delivery,
    enabled_webhook_endpoints,
    get_webhook_endpoint,
)
from app.notify.channels import (
    NOTICE_KINDS,
    NOTIFICATION_CHANNEL,
    RECOVERY_ENDS,
    channels_for,
    email_recipient_of,
    is_email_channel,
    webhook_endpoint_of,
)
from app.notify.email import MailNotSent, send_mail, smtp_server
from app.notify.envelope import CREDENTIALS_INVALID, EventEnvelope
from app.notify.messages import notice_message, reconnect_url_of
from app.notify.retry import RETRY_DELAYS, next_attempt_at
from app.notify.webhook_endpoints import signing_secrets
from app.notify.webhooks import AttemptOutcome, WebhookAttempt, post_webhook, webhook_message_id
from app.security import SecretBox

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 200
DELIVERY_BATCH = 100
CLAIM_LEASE = timedelta(minutes=2)
MAX_CONCURRENT_SENDS = 20


@dataclass(slots=True)
class DispatchReport:
    """What one dispatcher pass did."""

    fanned_out: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def busy(self) -> bool:
        """Say whether the pass found work (so another pass may find more)."""
        return bool(self.fanned_out or self.delivered or self.retrying or self.failed)

    def count(self, state: DeliveryState) -> None:
        if state is DeliveryState.SUCCEEDED:
            self.delivered += 1
        elif state is DeliveryState.PENDING:
            self.retrying += 1
        else:
            self.failed += 1


class Dispatcher:
    """One pass over the outbox: fan out new events, then send every due delivery."""

    def __init__(
        self, engine: Engine, settings: Settings, secrets: SecretBox, client: httpx.AsyncClient
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.secrets = secrets
        self.client = client

    async def run(self, now: datetime | None = None) -> DispatchReport:
        """Dispatch what is due at `now` (default: the current time)."""
        now = now or utcnow()
        report = DispatchReport()
        report.fanned_out = await asyncio.to_thread(self._fan_out, now)
        claimed = await asyncio.to_thread(self._claim, now)
        # Database-only channels go first, in event order: a restore then clears the
        # notification its failure made in this same pass.
        notifications = [d for d in claimed if d.channel == NOTIFICATION_CHANNEL]
        for delivery in notifications:
            report.count(
                await self._contained(
                    delivery, now, asyncio.to_thread(self._deliver_notification, delivery, now)
                )
            )
        slots = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

        async def send(delivery: ClaimedDelivery) -> DeliveryState:
            async with slots:
                if is_email_channel(delivery.channel):
                    sending = asyncio.to_thread(self._deliver_email, delivery, now)
                else:
                    sending = self._deliver_webhook(delivery, now)
                return await self._contained(delivery, now, sending)

        others = [d for d in claimed if d.channel != NOTIFICATION_CHANNEL]
        for state in await asyncio.gather(*(send(d) for d in others)):
            report.count(state)
        await asyncio.to_thread(self._delete_expired, now)
        if report.busy:
            log.info(
                "notify.dispatched",
                extra={
                    "fanned_out": report.fanned_out,
                    "delivered": report.delivered,
                    "retrying": report.retrying,
                    "failed": report.failed,
                },
            )
        return report

    async def _contained(
        self, delivery: ClaimedDelivery, now: datetime, sending: Awaitable[DeliveryState]
    ) -> DeliveryState:
        """Await one delivery; if it raises, log it and retry that delivery alone later."""
        try:
            return await sending
        except Exception as exc:
            log.exception(
                "notify.delivery_crashed",
                extra={"event_id": delivery.event_id, "channel": delivery.channel},
            )
            retry_at = next_attempt_at(delivery.attempt, now)
            state = DeliveryState.PENDING if retry_at else DeliveryState.FAILED
            error = f"internal error: {type(exc).__name__}"
            return await asyncio.to_thread(
                self._finish, delivery, state, next_at=retry_at, error=error
            )

    # -- fan-out and claims -------------------------------------------------------------

    def _fan_out(self, now: datetime) -> int:
        with session_scope(self.engine) as session:
            events = undispatched_events(session, FAN_OUT_BATCH)
            if not events:
                return 0
            endpoints = enabled_webhook_endpoints(session)
            recipients = notification_recipients(session)
            email_enabled = self.settings.smtp_url is not None
            fanned_out = 0
            for event in events:
                event_id = persisted_id(event)
                if not mark_dispatched(session, event_id, now):
                    continue  # another dispatcher got there first
                channels = channels_for(event, endpoints, recipients, email_enabled=email_enabled)
                add_deliveries(session, event_id, channels)
                fanned_out += 1
            return fanned_out

    def _claim(self, now: datetime) -> list[ClaimedDelivery]:
        with session_scope(self.engine) as session:
            return claim_due_deliveries(session, now, now + CLAIM_LEASE, DELIVERY_BATCH)

    def _delete_expired(self, now: datetime) -> None:
        with session_scope(self.engine) as session:
            delete_expired_events(session, now - timedelta(days=self.settings.event_retention_days))

    # -- login notifications --------------------------------------------------------------

    def _deliver_notification(self, delivery: ClaimedDelivery, now: datetime) -> DeliveryState:
        """Write (or clear) the login notifications in the transaction that marks delivery."""
        with session_scope(self.engine) as session:
            if not finish_delivery(session, delivery, DeliveryState.SUCCEEDED):
                return DeliveryState.PENDING  # the claim ran out; its new owner does it
            event = session.get(Event, delivery.event_id)
            mailbox = get_mailbox(session, event.mailbox_id) if event and event.mailbox_id else None
            if event is None or mailbox is None or mailbox.id is None:
                return DeliveryState.SUCCEEDED  # the mailbox is gone, and its notifications too
            if event.type in RECOVERY_ENDS:
                acknowledge_mailbox_notifications(
                    session, mailbox.id, RECOVERY_ENDS[event.type], now
                )
            elif event.type in NOTICE_KINDS and _still_failing(event, mailbox):
                message = notice_message(event, mailbox)
                for user_id in _people_to_tell(session, mailbox):
                    add_notification(
                        session,
                        user_id=user_id,
                        mailbox_id=mailbox.id,
                        kind=NOTICE_KINDS[event.type],
                        title=message.title,
                        body=message.text,
                        reconnect_url=reconnect_url_of(event),
                    )
            return DeliveryState.SUCCEEDED

    # -- email ----------------------------------------------------------------------------

    def _deliver_email(self, delivery: ClaimedDelivery, now: datetime) -> DeliveryState:
        server = smtp_server(self.settings)
        with session_scope(self.engine) as session:
            event = session.get(Event, delivery.event_id)
            mailbox = get_mailbox(session, event.mailbox_id) if event and event.mailbox_id else None
            address = _email_address(session, mailbox, email_recipient_of(delivery.channel))
            message = notice_message(event, mailbox) if event and mailbox else None
        if server is None or message is None or address is None:
            reason = "SMTP_URL is not set" if server is None else "no address to mail to"
            return self._finish(delivery, DeliveryState.FAILED, error=reason)
        try:
            send_mail(server, self.settings.smtp_from, address, message)
        except MailNotSent as exc:
            retry_at = None if exc.permanent else next_attempt_at(delivery.attempt, now)
            state = DeliveryState.PENDING if retry_at else DeliveryState.FAILED
            return self._finish(delivery, state, next_at=retry_at, error=str(exc))
        return self._finish(delivery, DeliveryState.SUCCEEDED)

    def _finish(
        self,
        delivery: ClaimedDelivery,
        state: DeliveryState,
        *,
        next_at: datetime | None = None,
        error: str | None = None,
    ) -> DeliveryState:
        with session_scope(self.engine) as session:
            finish_delivery(session, delivery, state, next_attempt_at=next_at, error=error)
        return state

    # -- webhooks -------------------------------------------------------------------------

    async def _deliver_webhook(self, delivery: ClaimedDelivery, now: datetime) -> DeliveryState:
        endpoint_id = webhook_endpoint_of(delivery.channel)
        assert endpoint_id is not None, f"unknown channel {delivery.channel}"
        target = await asyncio.to_thread(self._webhook_target, delivery.event_id, endpoint_id, now)
        if target is None:
            error = "the endpoint was deleted or disabled"
            return await asyncio.to_thread(
                self._finish, delivery, DeliveryState.FAILED, error=error
            )
        url, signing_secrets_now, envelope = target
        attempt = await post_webhook(
            self.client,
            url,
            signing_secrets_now,
            webhook_message_id(delivery.event_id, endpoint_id),
            envelope.model_dump_json(),
            allow_private=self.settings.webhook_allow_private_hosts,
            deadline_seconds=self.settings.webhook_timeout_seconds,
        )
        return await asyncio.to_thread(
            self._record_webhook_attempt, delivery, endpoint_id, envelope.type, attempt, now
        )

    def _webhook_target(
        self, event_id: int, endpoint_id: int, now: datetime
    ) -> tuple[str, list[str], EventEnvelope] | None:
        with session_scope(self.engine) as session:
            endpoint = get_webhook_endpoint(session, endpoint_id)
            event = session.get(Event, event_id)
            if endpoint is None or not endpoint.enabled or event is None:
                return None
            secrets = signing_secrets(endpoint, self.secrets, now)
            return endpoint.url, secrets, EventEnvelope.of(event)

    def _record_webhook_attempt(
        self,
        delivery: ClaimedDelivery,
        endpoint_id: int,
        event_type: str,
        attempt: WebhookAttempt,
        now: datetime,
    ) -> DeliveryState:
        retry_at: datetime | None = None
        if attempt.outcome is AttemptOutcome.DELIVERED:
            state = DeliveryState.SUCCEEDED
        elif attempt.outcome is AttemptOutcome.RETRY:
            retry_at = next_attempt_at(delivery.attempt, now, retry_after=attempt.retry_after)
            state = DeliveryState.PENDING if retry_at else DeliveryState.FAILED
        else:
            state = DeliveryState.FAILED
        with session_scope(self.engine) as session:
            finish_delivery(session, delivery, state, next_attempt_at=retry_at, error=attempt.error)
            add_webhook_delivery(
                session,
                WebhookDelivery(
                    endpoint_id=endpoint_id,
                    event_id=delivery.event_id,
                    webhook_id=webhook_message_id(delivery.event_id, endpoint_id),
                    event_type=event_type,
                    attempt=delivery.attempt,
                    state=state,
                    status_code=attempt.status_code,
                    latency_ms=attempt.latency_ms,
                    error=attempt.error,
                    delivered_at=now if state is DeliveryState.SUCCEEDED else None,
                    next_attempt_at=retry_at,
                ),
            )
            endpoint = get_webhook_endpoint(session, endpoint_id)
            if endpoint is None:
                return state
            if state is DeliveryState.SUCCEEDED:
                endpoint.failure_count = 0
                return state
            endpoint.failure_count += 1
            if attempt.gone:
                _disable(endpoint, "the receiver answered 410 Gone")
            elif (
                attempt.outcome is AttemptOutcome.RETRY
                and retry_at is None
                and endpoint.failure_count > len(RETRY_DELAYS)
            ):
                _disable(
                    endpoint,
                    f"{endpoint.failure_count} deliveries in a row failed for about a day;"
                    f" the last one: {attempt.error}",
                )
        return state


def _disable(endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    log.warning("notify.webhook_disabled", extra={"endpoint_id": endpoint.id, "reason": reason})


def _still_failing(event: Event, mailbox: Mailbox) -> bool:
    """Say whether the failure a notice tells of is not over by the time it is delivered."""
    if event.type == CREDENTIALS_INVALID:
        return mailbox.status is MailboxStatus.AUTH_FAILED
    return mailbox.failing_noticed_at is not None


def _people_to_tell(session: Session, mailbox: Mailbox) -> list[str]:
    """Return the owner, or for a system mailbox every notification recipient."""
    if mailbox.owner_user_id is not None:
        return [mailbox.owner_user_id]
    return [recipient.user_id for recipient in notification_recipients(session)]


def _email_address(session: Session, mailbox: Mailbox | None, user_id: str | None) -> str | None:
    if mailbox is None:
        return None
    if user_id is None:
        return mailbox.owner_email
    recipient = get_notification_recipient(session, user_id)
    return recipient.email if recipient is not None else None


async def dispatch_due(
    engine: Engine, settings: Settings, secrets: SecretBox, *, now: datetime | None = None
) -> DispatchReport:
    """Run one dispatcher pass with a fresh HTTP client (no proxies: addresses are pinned)."""
    async with httpx.AsyncClient(
        timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False
    ) as client:
        return await Dispatcher(engine, settings, secrets, client).run(now)
