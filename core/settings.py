"""Settings for every process, read from the environment (and `.env`).

Names match the README's settings table; `.env.example` lists them all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings object shared by the api, tracking and worker processes."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/marketing",
        description="PostgreSQL URL (postgresql://user:pass@host:port/db).",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL.")
    redis_prefix: str = Field("mp:", description="Prefix of every Redis key this platform writes.")

    host: str = Field("0.0.0.0", description="Interface the HTTP servers bind.")
    port: int = Field(3001, description="Management API port.")
    tracking_port: int = Field(3002, description="Tracking API port.")
    public_api_url: str = Field("http://localhost:3001", description="Base URL of the management API.")
    tracking_url: str = Field(
        "http://localhost:3002", description="Public base URL of the tracking API (pixels, links)."
    )

    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    temporal_namespace: str = Field("default", description="Temporal namespace.")
    temporal_task_queue: str = Field("marketing", description="Task queue the worker polls.")
    temporal_ui_url: str = Field("http://localhost:8233", description="Temporal web UI, for links.")
    worker_shutdown_seconds: float = Field(
        30.0,
        description="On SIGTERM, how long in-flight activities may finish before the worker cancels them.",
    )

    partitions_months_ahead: int = Field(3, description="Monthly event partitions kept ahead.")

    tracking_commit_max_events: int = Field(5000, description="Most events written by one group commit.")
    tracking_commit_concurrency: int = Field(
        2,
        description="Group commits in flight at once per tracking process (the second only with a backlog).",
    )
    tracking_commit_spill_events: int = Field(
        300, description="Queued events above which more than one group commit runs at once."
    )
    gc_thresholds: str = Field(
        "100000,50,100",
        description="gc.set_threshold for the tracking and worker processes ('' keeps Python's defaults).",
    )
    tracking_db_pool_size: int = Field(6, description="PostgreSQL connections per tracking process.")
    api_db_pool_size: int = Field(10, description="PostgreSQL connections per api process.")
    outbox_batch_size: int = Field(500, description="Outbox rows one dispatcher pass claims.")
    outbox_lease_seconds: float = Field(
        60.0, description="How long a claimed outbox row waits before the sweep takes it again."
    )
    outbox_poll_seconds: float = Field(
        0.2, description="How often an idle dispatcher looks for new outbox rows."
    )
    outbox_dispatch_concurrency: int = Field(
        32, description="Signal-with-start calls one dispatcher has in flight at once."
    )
    key_cache_seconds: float = Field(
        10.0, description="How long a process trusts a looked-up API key before re-checking it."
    )

    auth_failures_per_second: float = Field(
        20.0, description="Failed API key lookups allowed per client address per second (then 429)."
    )
    auth_failure_burst: int = Field(40, description="Failed API key lookups a client address may burst.")

    secret_key: str = Field(
        "dev-insecure-secret-change-me",
        description="Signs tracking links; `mp up` generates one into .mp/ when unset.",
    )
    secrets_keys: str = Field(
        "",
        description="Comma-separated Fernet keys for provider credentials at rest: the first encrypts, "
        "all decrypt; a key derived from SECRET_KEY is always tried last (and used when this is empty).",
    )
    breaker_failure_threshold: int = Field(
        5, description="Provider failures (within the window) that open its breaker."
    )
    breaker_window_seconds: int = Field(60, description="Window in which provider failures are counted.")
    breaker_cooldown_seconds: float = Field(30.0, description="How long an open breaker skips its provider.")
    email_rate_wait_seconds: float = Field(
        2.0, description="Longest wait for a provider's rate-limit token before trying the next provider."
    )
    sns_cert_url_pattern: str = Field(
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/",
        description="SNS signing certificates are only fetched from URLs matching this.",
    )
    webhook_max_age_seconds: float = Field(
        600.0,
        description="Signed provider webhooks (SendGrid, SNS) further than this from now are refused.",
    )
    allow_private_provider_hosts: bool = Field(
        False,
        description="Let providers point at loopback/private/link-local hosts (tests, a local SMTP server).",
    )
    aws_ses_region: str = Field("us-east-1", description="AWS region for SES.")
    aws_ses_endpoint_url: str | None = Field(None, description="SES endpoint override (tests).")
    sendgrid_api_key: str | None = Field(None, description="Default SendGrid API key.")

    data_dir: Path = Field(Path(".mp"), alias="MP_DATA_DIR", description="Where `mp up` keeps data.")
    embedded_postgres_port: int = Field(
        5433, alias="MP_POSTGRES_PORT", description="Port of the PostgreSQL `mp up` starts (no DATABASE_URL)."
    )
    embedded_redis_port: int = Field(
        6380, alias="MP_REDIS_PORT", description="Port of the Redis `mp up` starts (no REDIS_URL)."
    )
    embedded_temporal_port: int = Field(
        7233, alias="MP_TEMPORAL_PORT", description="gRPC port of the Temporal dev server `mp up` starts."
    )
    embedded_temporal_ui_port: int = Field(
        8233, alias="MP_TEMPORAL_UI_PORT", description="Web UI port of that Temporal dev server."
    )

    @property
    def asyncpg_dsn(self) -> str:
        """The database URL as asyncpg wants it (no SQLAlchemy driver suffix)."""
        return to_asyncpg_dsn(self.database_url)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the asyncpg driver for SQLAlchemy."""
        return to_sqlalchemy_url(self.database_url)


def to_asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://` and `postgres://` both become `postgresql://`."""
    for prefix in ("postgresql+asyncpg://", "postgres://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def to_sqlalchemy_url(url: str) -> str:
    """Any PostgreSQL URL with SQLAlchemy's asyncpg driver named."""
    return "postgresql+asyncpg://" + to_asyncpg_dsn(url)[len("postgresql://") :]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
