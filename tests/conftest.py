"""Shared fixtures: a private Dovecot with a fresh user per test (and Cyrus and Courier for the
server matrix), and a fresh database per test on each backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import Mailbox, MailboxSecurity
from app.imap.config import ConnectOptions
from app.main import create_app
from app.security import SecretBox
from app.sync.service import sync_mailbox
from tests.databases import BACKENDS, Backend, ThrowawayDatabases, throwaway_databases
from tests.debian_servers import Courier, Cyrus, PrivateServers
from tests.dovecot import Dovecot, DovecotInstances, MailUser
from tests.factories import MailboxFactory
from tests.imap_account import ImapAccount
from tests.live_api import LiveApi, create_api_key, serving
from tests.secret_watch import SecretKind, register_secret

pytest_plugins = ["tests.secret_watch"]


@pytest.fixture(scope="session")
def dovecot_instances() -> Iterator[DovecotInstances]:
    """Start Dovecots on demand (`.get(condstore=False)`), each once; stop all at the end.

    A start failure raises DovecotError carrying the master output and the Dovecot log.
    """
    instances = DovecotInstances()
    yield instances
    instances.stop_all()


@pytest.fixture(scope="session")
def dovecot(dovecot_instances: DovecotInstances) -> Dovecot:
    """Return the session's Dovecot with CONDSTORE/QRESYNC, STARTTLS and SPECIAL-USE."""
    return dovecot_instances.get()


@pytest.fixture(scope="session")
def legacy_dovecot(dovecot_instances: DovecotInstances) -> Dovecot:
    """Return a Dovecot that offers neither CONDSTORE/QRESYNC nor UNSELECT, as older servers."""
    return dovecot_instances.get(condstore=False, unselect=False)


@pytest.fixture(scope="session")
def private_servers() -> Iterator[PrivateServers]:
    """Start Cyrus and Courier on demand, each once per session; stop both at the end."""
    servers = PrivateServers()
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def courier(private_servers: PrivateServers) -> Courier:
    """Return the session's Courier-IMAP (plain IMAP on loopback; quirks in its docstring)."""
    return private_servers.courier()


@pytest.fixture(scope="session")
def cyrus(private_servers: PrivateServers) -> Cyrus:
    """Return the session's Cyrus IMAP (plain IMAP on loopback; quirks in its docstring)."""
    return private_servers.cyrus()


@pytest.fixture
def mail_user(dovecot: Dovecot) -> MailUser:
    """Return a new user with an empty mailbox, so no two tests share mailbox state."""
    return dovecot.add_user()


@pytest.fixture(scope="session")
def connect_options(dovecot: Dovecot) -> ConnectOptions:
    """Return options that trust the test CA and allow the loopback server."""
    return ConnectOptions(
        connect_timeout=5, read_timeout=10, allow_private_hosts=True, ca_file=dovecot.ca_file
    )


@pytest.fixture(scope="session", params=BACKENDS)
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThrowawayDatabases]:
    backend: Backend = request.param
    with throwaway_databases(backend, tmp_path_factory.mktemp(backend)) as factory:
        yield factory


@pytest.fixture
def empty_database_url(databases: ThrowawayDatabases) -> str:
    return databases.create_empty()


@pytest.fixture
def database_url(databases: ThrowawayDatabases) -> str:
    """A database of its own for this test, already migrated to the newest revision."""
    return databases.create_migrated()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    db_engine = create_db_engine(database_url)
    yield db_engine
    db_engine.dispose()


TEST_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of the machine's Redis for this test alone; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        keys = [name, *client.scan_iter(f"arq:*{name}*"), *client.scan_iter(f"{name}:*")]
        client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def settings(database_url: str, dovecot: Dovecot, queue_name: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        queue_name=queue_name,
        secret_keys=[
            SecretStr(register_secret(SecretKind.FERNET_KEY, Fernet.generate_key().decode()))
        ],
        imap_allow_private_hosts=True,
        imap_allow_plaintext=True,  # the rig's plain port, its fault proxy and legacy Dovecot
        imap_ca_file=dovecot.ca_file,
        imap_connect_timeout=5,
        imap_read_timeout=10,
        sync_batch_size=50,
    )


@pytest.fixture
def add_mailbox(engine: Engine, settings: Settings) -> MailboxFactory:
    """Register a test user as a mailbox (as the API would) and return its id.

    Dovecot's users connect over TLS; Cyrus and Courier serve plain IMAP only.
    """
    secrets = SecretBox.from_settings(settings)

    def add(user: ImapAccount, **overrides: object) -> int:
        host, port = user.address()
        security = MailboxSecurity.NONE
        if isinstance(user, MailUser):
            port, security = user.dovecot.tls_port, MailboxSecurity.SSL
        values: dict[str, object] = {
            "owner_user_id": "crm-user-1",
            "owner_email": "owner@example.com",
            "email_address": f"{user.name}@example.com",
            "host": host,
            "port": port,
            "security": security,
            "username": user.name,
            "password_enc": secrets.encrypt(user.password),
        }
        values.update(overrides)
        with session_scope(engine) as session:
            mailbox = Mailbox.model_validate(values)
            session.add(mailbox)
            session.flush()
            assert mailbox.id is not None
            return mailbox.id

    return add


@pytest.fixture
def watched_mailbox(
    engine: Engine, settings: Settings, add_mailbox: MailboxFactory, mail_user: MailUser
) -> int:
    """A mailbox synced once (its folders known, INBOX and Sent enabled) and not due again."""
    mailbox_id = add_mailbox(mail_user)
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None and result.complete, "the first sync did not complete"
    return mailbox_id


@pytest.fixture
def live_api(engine: Engine, settings: Settings) -> Iterator[LiveApi]:
    key = create_api_key(engine)
    headers = {"Authorization": f"Bearer {key}"}
    with (
        serving(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, headers=headers, timeout=30) as client,
    ):
        yield LiveApi(base_url, client, key)
