"""Service settings, every one read from the environment (or a `.env` file).

The defaults make `make run` work on a fresh machine: a SQLite file under
`./var/`, an embedded Redis, and a secret key generated once into `./var/`.
Production sets `DATABASE_URL`, `REDIS_URL` and `SECRET_KEYS` explicitly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DATA_DIR = Path("var")


class Settings(BaseSettings):
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
    imap_allow_private_hosts: bool = Field(
        default=False,
        description="Allow IMAP hosts on loopback, private or link-local addresses.",
    )
    imap_ca_file: Path | None = Field(
        default=None, description="PEM bundle trusted for IMAP TLS instead of the system store."
    )

    sync_interval_minutes: int = Field(default=30, ge=1, description="Cron period.")
    sync_window_days: int = Field(default=365, ge=1, description="First-sync window.")
    sync_batch_size: int = Field(default=200, ge=1, le=5000, description="Messages per FETCH.")
    sync_time_budget_seconds: float = Field(
        default=60.0, gt=0, description="Time one mailbox sync may take before it checkpoints."
    )
    sync_lease_seconds: int = Field(
        default=600, ge=30, description="How long a crashed worker's lease blocks a mailbox."
    )
    sync_max_jobs: int = Field(default=10, ge=1, description="Concurrent sync jobs per worker.")
    sync_max_connections_per_host: int = Field(
        default=4, ge=1, description="Concurrent IMAP connections to one server host."
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
    watch_connect_rate: float = Field(
        default=20.0, gt=0, description="Watch connections a watcher process opens per second."
    )
    watch_poll_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often folders without IDLE/NOTIFY are polled with STATUS.",
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
        default=10.0, gt=0, description="Seconds a webhook receiver has to answer."
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
    smtp_allow_private_hosts: bool = Field(
        default=False,
        description=(
            "Allow an SMTP host on loopback, private or link-local addresses"
            " (a local relay on 127.0.0.1 needs it)."
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
            "Calls per minute one API key may make to remote search, connection checks and"
            " sync triggers, per API process (429 with Retry-After above)."
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

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

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
