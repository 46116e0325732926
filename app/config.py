"""Service settings, every one read from the environment (or a `.env` file).

The defaults make `make run` work on a fresh machine: a SQLite file under
`./var/`, an embedded Redis, and a secret key generated once into `./var/`.
Production sets `DATABASE_URL`, `REDIS_URL` and `SECRET_KEYS` explicitly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DATA_DIR = Path("var")


def web_origin(value: str) -> str:
    """Return `value` as the origin `window.location.origin` gives (RFC 6454), else raise.

    Exactly `scheme://host[:port]` is accepted; the host is lower-cased.
    """
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError("the port is not a number") from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ValueError("must be an origin: scheme://host[:port], nothing else")
    return f"{parts.scheme}://{parts.netloc.lower()}"


LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LogSettings(BaseSettings):
    """How the process logs; read on their own first, so a bad other setting is logged well."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    log_format: LogFormat = Field(
        default="text",
        description="`text`: one line per record, its fields as key=value; `json`: JSON lines.",
    )
    log_level: LogLevel | None = Field(
        default=None,
        description="Lowest level logged; unset: INFO for the long-running commands, else WARNING.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return (value.strip().upper() or None) if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_in_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class Settings(LogSettings):
    """Every knob of the service; names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DATA_DIR / 'imap-bridge.db'}",
        description="SQLAlchemy URL; PostgreSQL in production (postgresql+psycopg://...).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for arq; unset starts an embedded Redis under ./var/.",
    )
    queue_name: str = Field(
        default="imap-bridge",
        min_length=1,
        max_length=64,
        description="arq queue name; deployments sharing one Redis use different names.",
    )
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Fernet keys, comma-separated, newest first; unset uses ./var/secret.key.",
    )

    imap_connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect.")
    imap_read_timeout: float = Field(default=60.0, gt=0, description="Seconds per IMAP read.")
    imap_operation_timeout: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds an API request may spend on one IMAP session, from connect to logout"
            " (connection checks, mailbox verification, remote search, sources and"
            " attachments, streamed ones included); 504 `timeout` beyond."
        ),
    )
    imap_download_chunk_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=64 << 20,
        description=(
            "Bytes fetched per partial FETCH when streaming a source or attachment; the most"
            " of a message one download holds in memory."
        ),
    )
    imap_allow_private_hosts: bool = Field(
        default=False,
        description="Allow IMAP hosts on loopback, private or link-local addresses.",
    )
    imap_ca_file: Path | None = Field(
        default=None, description="PEM bundle trusted for IMAP TLS instead of the system store."
    )
    imap_allow_plaintext: bool = Field(
        default=False,
        description=(
            "Allow `security: none` (plain IMAP, the password or token in clear on the wire)"
            " for connection checks, mailboxes and their syncs."
        ),
    )

    sync_interval_minutes: int = Field(default=30, ge=1, description="Cron period.")
    sync_window_days: int = Field(default=365, ge=1, description="First-sync window.")
    sync_batch_size: int = Field(default=200, ge=1, le=5000, description="Messages per FETCH.")
    sync_max_message_bytes: int = Field(
        default=100 << 20,
        ge=1024,
        description=(
            "Largest message (RFC822.SIZE) a sync downloads; a larger one is stored from its"
            " header alone, with a defect saying so."
        ),
    )
    sync_time_budget_seconds: float = Field(
        default=60.0, gt=0, description="Time one mailbox sync may take before it checkpoints."
    )
    sync_lease_seconds: int = Field(
        default=60,
        ge=3,
        description=(
            "Length of a sync's lease on its mailbox, renewed every third of it while the sync"
            " runs: how long a worker that crashed on another machine blocks the mailbox (one"
            " on the same machine is taken over at once)."
        ),
    )
    sync_runs_kept_per_mailbox: int = Field(
        default=100,
        ge=1,
        description=(
            "Finished sync runs kept per mailbox (the worker prunes older ones every hour);"
            " each mailbox's newest successful run is kept too, however old."
        ),
    )
    sync_max_jobs: int = Field(default=10, ge=1, description="Concurrent sync jobs per worker.")
    imap_max_connections_per_host: int = Field(
        default=4,
        ge=1,
        validation_alias=AliasChoices(
            "imap_max_connections_per_host", "sync_max_connections_per_host"
        ),
        description=(
            "IMAP sessions of syncs and API requests open at once to one server host, counted"
            " across every process sharing the Redis (SYNC_MAX_CONNECTIONS_PER_HOST is the"
            " old name)."
        ),
    )
    imap_max_connections_per_account: int = Field(
        default=10,
        ge=1,
        description=(
            "IMAP sessions open at once to one account (host and username), watch sessions"
            " included, across every process; Gmail allows about 15, Microsoft 365 about 20."
        ),
    )
    imap_slot_seconds: float = Field(
        default=15.0,
        ge=1,
        description=(
            "How long a connection slot outlives a process that died holding it; a live"
            " holder renews its slots every third of this."
        ),
    )
    imap_slot_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long a sync waits for a connection slot before it fails"
            " `waiting_for_connection_slot` and is retried later (API requests do not wait:"
            " 503 with Retry-After)."
        ),
    )
    worker_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description=(
            "CPU niceness of `imap-bridge worker`: syncs yield the cores to the API on a"
            " shared host; 0 keeps the normal priority."
        ),
    )

    watch_enabled: bool = Field(
        default=True,
        description=(
            "Run the watcher in `imap-bridge run`: new mail is synced within seconds"
            " (IDLE/NOTIFY); false leaves every mailbox to the scheduled sync."
        ),
    )
    watch_max_connections: int = Field(
        default=1000, ge=1, description="Mailboxes one watcher process watches at most."
    )
    watch_max_connections_per_host: int = Field(
        default=1000,
        ge=1,
        description=(
            "Watch sessions open at once to one server host, across every watcher process;"
            " a mailbox past it is watched once a slot frees (tried every minute)."
        ),
    )
    watch_connect_rate: float = Field(
        default=20.0, gt=0, description="Watch connections a watcher process opens per second."
    )
    watch_poll_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How often folders without IDLE/NOTIFY are polled with STATUS, and IDLE without"
            " NOTIFY is re-issued (servers that idle without push look at INBOX when it begins)."
        ),
    )
    watch_idle_renew_seconds: float = Field(
        default=29 * 60.0,
        gt=0,
        le=29 * 60.0,
        description="How often IDLE is re-issued (RFC 2177: servers may drop it after 30 min).",
    )
    watch_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a crashed watcher keeps its mailboxes from the other watchers.",
    )
    watch_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "How often a watcher re-reads its mailboxes (new, disabled, deleted, new"
            " credentials or folders) and renews its leases."
        ),
    )

    webhook_allow_private_hosts: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback, private or link-local addresses.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds one webhook attempt may take in all: connecting, sending, and the"
            " receiver's answer (of whose body at most 4 KiB is read)."
        ),
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description=(
            "Where credential-failure mail goes out: smtp://user:pass@host:587?starttls=true"
            " or smtps://user:pass@host:465; unset turns the email channel off."
        ),
    )
    smtp_from: str = Field(
        default="imap-bridge@localhost", description="Sender address of notification mail."
    )
    event_retention_days: int = Field(
        default=7, ge=1, description="Days the outbox keeps delivered events for SSE resumes."
    )
    failing_notice_after_seconds: float = Field(
        default=21600.0,
        gt=0,
        description=(
            "Seconds a mailbox may keep failing for a reason other than its credentials"
            " (TLS, unreachable, blocked host, server unavailable) before"
            " `mailbox.connection_failing` tells its owner; recovery sends"
            " `mailbox.connection_restored`."
        ),
    )
    reauth_url_template: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+[^\s]*\{mailbox_id\}[^\s]*$",
        examples=["https://crm.example.com/mailboxes/{mailbox_id}/reconnect"],
        description=(
            "The CRM page where an owner fixes a mailbox; `{mailbox_id}` is replaced by the"
            " mailbox's id. Credential and connection notices carry it as `reconnect_url`;"
            " unset, they carry null."
        ),
    )
    smtp_allow_private_hosts: bool = Field(
        default=False,
        description=(
            "Allow an SMTP host on loopback, private or link-local addresses"
            " (a local relay on 127.0.0.1 needs it)."
        ),
    )
    smtp_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds one notification mail may take in all: connecting, TLS, login and"
            " sending; the connection is cut when they pass."
        ),
    )

    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description=(
            "Public URL of this service, for OAuth redirect URIs"
            " (<url>/oauth/<provider>/callback); unset uses the URL of each request."
        ),
    )
    oauth_state_ttl_seconds: int = Field(
        default=600, ge=60, le=3600, description="How long a started OAuth popup flow is valid."
    )
    oauth_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins (scheme://host[:port], comma-separated) of the CRM pages an OAuth popup"
            " flow may post its result to; unset allows only the origin of PUBLIC_BASE_URL"
            " (else of the request)."
        ),
    )
    oauth_allow_private_hosts: bool = Field(
        default=False,
        description=(
            "Allow OAuth token and userinfo endpoints on loopback, private or link-local"
            " addresses (an identity provider inside your network)."
        ),
    )

    api_max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body the API reads (413 above)."
    )
    api_rate_limit_per_minute: int = Field(
        default=30,
        ge=1,
        description=(
            "Calls per minute one API key may make to each route that costs a remote round"
            " trip (connection checks, mailbox create and patch, folder settings, remote"
            " search, sync triggers, /raw, attachments, email flags, OAuth token exchange,"
            " completion, check-connection and provider setup, webhook create, patch and"
            " test), per API process (429 with Retry-After above)."
        ),
    )
    api_imap_concurrency: int = Field(
        default=8,
        ge=1,
        le=32,
        description=(
            "API requests that talk to an IMAP server at once, per API process; beyond,"
            " 503 `imap_busy` with Retry-After, so they never take the threads database"
            " requests run on."
        ),
    )
    api_database_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Requests answered from the database alone that run at once, per API process;"
            " the others wait their turn (routes that talk to an IMAP server or an identity"
            " provider are not counted)."
        ),
    )
    sse_max_streams_per_key: int = Field(
        default=20,
        ge=1,
        description=(
            "Open `GET /v1/events` streams one API key may hold per API process (429"
            " `too_many_streams` above); a slot is freed when its stream closes."
        ),
    )
    sse_key_recheck_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often an open event stream checks that its API key is not revoked.",
    )
    sse_poll_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description=(
            "Threads the open event streams of one API process share to poll the outbox,"
            " apart from the threads that answer requests."
        ),
    )
    metrics_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long `/metrics` reuses the figures it read from the database and Redis.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, `/metrics` answers only `Authorization: Bearer <token>` (else 401).",
    )

    health_behind_after_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "How long a mailbox may stay due (or its queued sync wait) before its health"
            " says `behind`."
        ),
    )

    @field_validator("secret_keys", "oauth_allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("oauth_allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        return [web_origin(origin) for origin in origins]

    @model_validator(mode="after")
    def _watch_leases_outlive_heartbeats(self) -> Settings:
        """Refuse a watch lease that lapses between heartbeats (watches would change hands)."""
        if self.watch_refresh_seconds * 2 > self.watch_lease_seconds:
            raise ValueError(
                "WATCH_LEASE_SECONDS must be at least twice WATCH_REFRESH_SECONDS"
                " (the heartbeat that renews the watch leases)"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()
