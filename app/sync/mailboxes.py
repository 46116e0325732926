"""Register, change and delete mailboxes: the rules that need a live IMAP server.

    register:  address taken ------------------------> MailboxExistsError (nothing saved)
               log in -- ImapError ------------------> raised (nothing saved)
               insert the mailbox (a concurrent twin -> MailboxExistsError), discover
               its folders (inbox and sent enabled); `next_sync_at` null: due at once
    change:    new host, port, security, username or tls_verify without new
               credentials -> CredentialsRequiredError; an OAuth mailbox moved off its
               provider's IMAP host -> ProviderHostRequiredError (nothing sent, nothing saved)
               new settings or credentials, or resuming an `auth_failed` mailbox
               -> log in first (ImapError: nothing saved) -> store -> `active`,
               last error cleared, due now (`mailbox.credentials_restored` when it
               was `auth_failed`); `disabled` stays disabled until asked otherwise
    complete:  an OAuth popup's code + state -> tokens (app.oauth.service.finish_flow)
               -> register at the provider's IMAP server as the address it named;
               the tokens stay inside the service
    delete:    one statement; the schema cascades to folders, mail, links,
               attachments and sync runs

Addresses are stored lower-cased, so "Ann@Example.com" and "ann@example.com"
are one mailbox. Secrets are stored encrypted; only the login sees them in clear.
A stored secret only ever goes to the server it was given for: whoever points
a mailbox elsewhere gives the credentials for the new place in the same
request, so an API caller cannot make the service hand a password or token to
a server of the caller's choosing. Plain IMAP needs IMAP_ALLOW_PLAINTEXT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.db.models import AuthType, Mailbox, MailboxStatus, utcnow
from app.db.repositories.events import record_event
from app.db.repositories.mailboxes import find_mailbox
from app.imap import FolderManager, Security
from app.oauth.errors import AccountUnknownError
from app.oauth.registry import ProviderRegistry, installed_providers
from app.oauth.service import finish_flow
from app.security import SecretBox
from app.sync.connection_check import Credential, LoginOptions, ServerSettings, log_in
from app.sync.credentials import imap_config
from app.sync.errors import CredentialsRequiredError, ProviderHostRequiredError, SyncError
from app.sync.folders import reconcile_folders
from app.sync.notices import note_success


class MailboxExistsError(SyncError):
    """The owner (or the system, for owner-less mailboxes) already has this address."""

    code = "mailbox_exists"


class Keep(Enum):
    """Marks a field a change leaves as it is (unlike None, which clears it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class Owner:
    """The CRM user a mailbox belongs to, and where to tell them about it."""

    user_id: str
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """Everything a new mailbox needs; `owner` None registers a system mailbox."""

    email_address: str
    owner: Owner | None
    server: ServerSettings
    credential: Credential
    sync_start: date | None = None
    watch: bool = True


@dataclass(frozen=True, slots=True)
class MailboxChanges:
    """What a change request touches; everything else stays."""

    server: ServerSettings | None = None
    credential: Credential | None = None
    owner: Owner | Keep | None = KEEP
    sync_start: date | Keep | None = KEEP
    status: MailboxStatus | None = None
    watch: bool | None = None


@dataclass(frozen=True, slots=True)
class ChangedMailbox:
    """The mailbox after a change, and whether it became due for a sync right now."""

    mailbox: Mailbox
    due_now: bool


def register_mailbox(
    session: Session, secrets: SecretBox, options: LoginOptions, registration: Registration
) -> Mailbox:
    """Log in, then store the mailbox with its folders; raise before saving anything."""
    address = registration.email_address.strip().lower()
    owner = registration.owner
    _refuse_taken(session, owner.user_id if owner else None, address, mailbox_id=None)
    server = registration.server
    with log_in(server, registration.credential, options) as connection:
        folders = FolderManager(connection)
        listing = folders.listing()
        mailbox = Mailbox(
            owner_user_id=owner.user_id if owner else None,
            owner_email=owner.email if owner else None,
            email_address=address,
            host=server.host,
            port=server.port,
            security=server.security,
            username=server.username,
            tls_verify=server.tls_verify,
            sync_start=registration.sync_start,
            watch=registration.watch,
        )
        _store_credential(mailbox, registration.credential, secrets)
        session.add(mailbox)
        _flush_or_conflict(session, owner.user_id if owner else None, address)
        reconcile_folders(session, mailbox, listing, folders.status)
    return mailbox


def complete_oauth_mailbox(
    session: Session,
    secrets: SecretBox,
    options: LoginOptions,
    registry: ProviderRegistry,
    provider_name: str,
    *,
    code: str,
    state: str,
    owner: Owner | None,
    sync_start: date | None,
    allow_private_hosts: bool,
) -> Mailbox:
    """Finish a popup flow on the server: exchange the code, then register the mailbox.

    An address the owner already has is a `MailboxExistsError`, never an update:
    whoever completes a flow must not replace another mailbox's tokens.
    """
    provider = registry.get(provider_name)
    tokens = finish_flow(
        session,
        secrets,
        registry,
        provider_name,
        code=code,
        state=state,
        allow_private_hosts=allow_private_hosts,
    )
    if tokens.email_address is None:
        raise AccountUnknownError(f"{provider.display_name} did not say which account signed in")
    registration = Registration(
        email_address=tokens.email_address,
        owner=owner,
        server=ServerSettings(
            host=provider.imap_host,
            port=provider.imap_port,
            security=Security.SSL,
            username=tokens.email_address,
            tls_verify=True,
        ),
        credential=Credential(
            access_token=tokens.access_token,
            provider=provider_name,
            refresh_token=tokens.refresh_token,
            expires_in=tokens.expires_in,
        ),
        sync_start=sync_start,
    )
    return register_mailbox(session, secrets, options, registration)


def change_mailbox(
    session: Session,
    secrets: SecretBox,
    options: LoginOptions,
    mailbox: Mailbox,
    changes: MailboxChanges,
) -> ChangedMailbox:
    """Apply `changes`; new settings or credentials must log in before anything is stored."""
    _refuse_moving_stored_secret(mailbox, changes)
    if not isinstance(changes.owner, Keep):
        owner_id = changes.owner.user_id if changes.owner else None
        _refuse_taken(session, owner_id, mailbox.email_address, mailbox_id=mailbox.id)
    resuming = changes.status is MailboxStatus.ACTIVE and mailbox.status is not MailboxStatus.ACTIVE
    verify = (
        changes.server is not None
        or changes.credential is not None
        or (resuming and mailbox.status is MailboxStatus.AUTH_FAILED)
    )
    if verify:
        _log_in_with(mailbox, secrets, options, changes)
    _store_changes(mailbox, changes, secrets)
    if verify:
        _credentials_work(session, mailbox)
    if changes.status is not None:
        mailbox.status = changes.status
    due_now = (verify or resuming) and mailbox.status is MailboxStatus.ACTIVE
    if due_now:
        mailbox.next_sync_at = utcnow()
    _flush_or_conflict(session, mailbox.owner_user_id, mailbox.email_address)
    return ChangedMailbox(mailbox, due_now)


def remove_mailbox(session: Session, mailbox: Mailbox) -> None:
    """Delete the mailbox; its folders, mail, links, attachments and runs go with it."""
    session.delete(mailbox)
    session.flush()


def _refuse_taken(
    session: Session, owner_user_id: str | None, address: str, *, mailbox_id: int | None
) -> None:
    existing = find_mailbox(session, owner_user_id, address)
    if existing is not None and existing.id != mailbox_id:
        raise MailboxExistsError(_taken_message(owner_user_id, address))


def _taken_message(owner_user_id: str | None, address: str) -> str:
    whose = f"user {owner_user_id}" if owner_user_id is not None else "the system"
    return f"{whose} already has a mailbox for {address}"


def _flush_or_conflict(session: Session, owner_user_id: str | None, address: str) -> None:
    """Write the row; a unique violation means a concurrent request took the address first.

    The mailbox table's only unique keys are the address per owner (and per
    system), so an IntegrityError here is that race and nothing else.
    """
    try:
        session.flush()
    except IntegrityError as exc:
        raise MailboxExistsError(_taken_message(owner_user_id, address)) from exc


def _stored_server(mailbox: Mailbox) -> ServerSettings:
    return ServerSettings(
        host=mailbox.host,
        port=mailbox.port,
        security=mailbox.security,
        username=mailbox.username,
        tls_verify=mailbox.tls_verify,
    )


def _refuse_moving_stored_secret(mailbox: Mailbox, changes: MailboxChanges) -> None:
    """Refuse new server settings that would take the stored password or token elsewhere.

    Any difference in host, port, security, username or tls_verify needs the
    credentials in the same request. An OAuth mailbox's tokens are the
    provider's, and only its IMAP server gets them.
    """
    server = changes.server
    if server is None or server == _stored_server(mailbox):
        return
    if changes.credential is None:
        raise CredentialsRequiredError(
            "changing host, port, security, username or tls_verify needs the credentials"
            " (auth) in the same request; the stored ones stay with the stored server"
        )
    provider = changes.credential.provider
    if provider is None or server.host == mailbox.host:
        return
    imap_host = installed_providers().get(provider).imap_host
    if server.host != imap_host:
        raise ProviderHostRequiredError(
            f"an OAuth mailbox of {provider} stays on its IMAP server {imap_host}"
        )


def _log_in_with(
    mailbox: Mailbox, secrets: SecretBox, options: LoginOptions, changes: MailboxChanges
) -> None:
    """Log in with the settings and credential the mailbox would have after `changes`."""
    stored = imap_config(mailbox, secrets)
    credential = changes.credential or Credential(
        password=stored.password, access_token=stored.access_token
    )
    with log_in(changes.server or _stored_server(mailbox), credential, options):
        pass


def _store_changes(mailbox: Mailbox, changes: MailboxChanges, secrets: SecretBox) -> None:
    if changes.server is not None:
        mailbox.host = changes.server.host
        mailbox.port = changes.server.port
        mailbox.security = changes.server.security
        mailbox.username = changes.server.username
        mailbox.tls_verify = changes.server.tls_verify
    if changes.credential is not None:
        _store_credential(mailbox, changes.credential, secrets)
    if not isinstance(changes.owner, Keep):
        mailbox.owner_user_id = changes.owner.user_id if changes.owner else None
        mailbox.owner_email = changes.owner.email if changes.owner else None
    if not isinstance(changes.sync_start, Keep):
        mailbox.sync_start = changes.sync_start
    if changes.watch is not None:
        mailbox.watch = changes.watch


def _store_credential(mailbox: Mailbox, credential: Credential, secrets: SecretBox) -> None:
    """Encrypt the credential into the row, dropping whatever the other login method kept."""
    if credential.access_token is not None:
        mailbox.auth_type = AuthType.OAUTH
        mailbox.provider = credential.provider
        mailbox.password_enc = None
        mailbox.access_token_enc = secrets.encrypt(credential.access_token.get_secret_value())
        refresh = credential.refresh_token
        mailbox.refresh_token_enc = secrets.encrypt(refresh.get_secret_value()) if refresh else None
        mailbox.token_expires_at = _expiry(credential.expires_in)
    else:
        assert credential.password is not None  # a credential is a password or a token
        mailbox.auth_type = AuthType.PASSWORD
        mailbox.provider = None
        mailbox.password_enc = secrets.encrypt(credential.password.get_secret_value())
        mailbox.access_token_enc = mailbox.refresh_token_enc = None
        mailbox.token_expires_at = None


def _expiry(expires_in: int | None) -> datetime | None:
    return utcnow() + timedelta(seconds=expires_in) if expires_in is not None else None


def _credentials_work(session: Session, mailbox: Mailbox) -> None:
    """Forget the last failure: the login just worked."""
    if mailbox.status is MailboxStatus.AUTH_FAILED:
        mailbox.status = MailboxStatus.ACTIVE
        record_event(session, "mailbox.credentials_restored", mailbox, {})
    note_success(session, mailbox)
    mailbox.last_error = None
    mailbox.consecutive_failures = 0
