"""Shared fixtures: a private Dovecot with a fresh user per test (and Cyrus and Courier for the
server matrix), and a fresh database per test on each backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine, make_url

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.imap.config import ConnectOptions
from app.security import SecretBox
from app.sync.service import sync_mailbox
from tests.support.databases import BACKENDS, Backend, ThrowawayDatabases, throwaway_databases
from tests.support.debian_servers import Courier, Cyrus, PrivateServers
from tests.support.dovecot import Dovecot, DovecotInstances, MailUser
from tests.support.factories import MailboxFactory, account_mailbox, create_mailbox, id_of
from tests.support.fault_proxy import FaultProxy
from tests.support.imap_account import ImapAccount
from tests.support.live_api import LiveApi, running_api
from tests.support.redis_queue import TEST_REDIS_URL, delete_queue, new_queue_name
from tests.support.secret_watch import SecretKind, register_secret

pytest_plugins = ["tests.support.secret_watch"]


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
def empty_database_url(databases: ThrowawayDatabases) -> Iterator[str]:
    url = databases.create_empty()
    yield url
    databases.release(url)


@pytest.fixture
def database_url(databases: ThrowawayDatabases) -> Iterator[str]:
    """A database of its own for this test, already migrated to the newest revision."""
    url = databases.create_migrated()
    yield url
    databases.release(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    db_engine = create_db_engine(database_url)
    yield db_engine
    db_engine.dispose()


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of the machine's Redis for this test alone; its keys are deleted afterwards."""
    name = new_queue_name()
    yield name
    delete_queue(TEST_REDIS_URL, name)


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the tests' Redis: `take_down()` is a Redis outage."""
    address = make_url(TEST_REDIS_URL)
    assert address.host is not None and address.port is not None
    with FaultProxy(address.host, address.port) as proxy:
        yield proxy


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
    """Register a test user as a mailbox (as the API would) and return its id."""
    secrets = SecretBox.from_settings(settings)

    def add(user: ImapAccount, **overrides: object) -> int:
        columns = account_mailbox(user, secrets.encrypt(user.password))
        with session_scope(engine) as session:
            return id_of(create_mailbox(session, **(columns | overrides)))

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
    with running_api(engine, settings) as api:
        yield api
