"""Settings for every process, read from the environment (and `.env`).

Names match the README's settings table; `.env.example` lists them all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Signs nothing safely: anyone who reads this file can forge tracking links.
# Processes refuse it unless told otherwise (see `refuse_dev_secret`).
DEV_SECRET_KEY = "dev-insecure-secret-change-me"


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
        description=(
            "gc.set_threshold for the tracking, worker, API and dashboard processes "
            "('' keeps Python's defaults)."
        ),
    )
    tracking_db_pool_size: int = Field(6, description="PostgreSQL connections per tracking process.")
    db_pool_min_size: int = Field(
        2, description="Connections each asyncpg pool (tracking ingest, send path) keeps open when idle."
    )
    tracking_engine_pool_size: int = Field(
        2, description="SQLAlchemy connections per tracking process for keys, links and webhooks."
    )
    api_db_pool_size: int = Field(10, description="PostgreSQL connections per api process.")
    outbox_batch_size: int = Field(
        500, description="Events one dispatcher pass claims (whole outbox rows, at least one)."
    )
    outbox_lease_seconds: float = Field(
        60.0, description="How long a claimed outbox row waits before the sweep takes it again."
    )
    outbox_poll_seconds: float = Field(
        0.05,
        description="How often an idle dispatcher looks for new outbox rows (one probe of an empty index).",
    )
    outbox_dispatch_concurrency: int = Field(
        32, description="Signal-with-start calls one dispatcher has in flight at once."
    )
    worker_db_pool_size: int = Field(5, description="SQLAlchemy connections per worker process.")
    email_send_pool_size: int = Field(
        40, description="asyncpg connections per worker for the send path (three statements a message)."
    )
    email_send_cache_seconds: float = Field(
        5.0, description="How long a worker trusts a workspace's providers and a template before re-reading."
    )
    campaign_send_concurrency: int = Field(
        100,
        description="Provider calls a campaign batch has in flight at once (claimed, recorded together).",
    )
    campaign_batch_size: int = Field(
        500, description="Recipients one campaign `send_batch` activity handles."
    )
    campaign_window: int = Field(4, description="`send_batch` activities one campaign has in flight at once.")
    campaign_heartbeat_seconds: float = Field(
        30.0, description="Heartbeat timeout of `send_batch`: how soon a batch of a dead worker is retried."
    )
    email_reconcile_settle_seconds: float = Field(
        600.0,
        ge=0,
        description="A send interrupted mid-provider-call is looked up at its provider once claimed this "
        "long ago (never less than the providers' timeouts and rate-limit waits): the provider's delay "
        "before an accepted message can be queried (SendGrid's Email Activity is eventually consistent).",
    )
    email_reconcile_give_up_seconds: float = Field(
        1800.0,
        ge=0,
        description="An interrupted send whose lookups still fail this long after its claim is marked "
        "`unknown` (never sent again).",
    )
    db_command_timeout_seconds: float = Field(
        60.0, description="Longest a statement on an asyncpg pool (ingest, send path) may run."
    )
    redis_socket_timeout_seconds: float = Field(
        5.0, description="Longest wait for a Redis reply before the call fails."
    )
    redis_connect_timeout_seconds: float = Field(5.0, description="Longest wait to connect to Redis.")
    temporal_connect_timeout_seconds: float = Field(
        10.0, description="Longest wait to connect to Temporal before the API answers 503."
    )
    tracking_http_timeout_seconds: float = Field(
        10.0, description="Timeout of tracking's outbound HTTP calls (SNS certificates and confirmations)."
    )
    segment_refresh_timeout_seconds: float = Field(
        3600.0, description="Execution timeout of one segment refresh workflow."
    )
    partitions_run_timeout_seconds: float = Field(
        7200.0, description="Execution timeout of each scheduled event-partitions run."
    )
    segment_dispatch_timeout_seconds: float = Field(
        600.0, description="Execution timeout of each scheduled run that starts due segment refreshes."
    )
    analytics_rollup_seconds: float = Field(
        60.0, ge=1, description="How often the analytics rollups take in newly arrived events."
    )
    analytics_rollup_lag_seconds: float = Field(
        60.0,
        ge=0,
        description="Events are rolled up once received this long ago (covers commits still in flight).",
    )
    web_port: int = Field(3000, description="Dashboard (web) port.")
    key_cache_seconds: float = Field(
        10.0, description="How long a process trusts a looked-up API key before re-checking it."
    )

    auth_failures_per_second: float = Field(
        20.0, description="Failed API key lookups allowed per client address per second (then 429)."
    )
    auth_failure_burst: int = Field(40, description="Failed API key lookups a client address may burst.")

    secret_key: str = Field(
        DEV_SECRET_KEY,
        description=(
            "Signs tracking links; `mp up` generates one into .mp/ when unset. The api, tracking "
            "and worker processes refuse the development default unless MP_ALLOW_DEV_SECRET=1."
        ),
    )
    allow_dev_secret: bool = Field(
        False,
        alias="MP_ALLOW_DEV_SECRET",
        description="Let processes start with the development SECRET_KEY (local experiments only).",
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


def refuse_dev_secret(settings: Settings, process: str) -> None:
    """Stop a process (api, tracking, worker) that would sign links with the
    development key: one line on stderr, exit status 1.

    `mp up` passes its children a key it generated into the data dir, so
    only a process started by hand (or by a deployment) without SECRET_KEY
    gets here; MP_ALLOW_DEV_SECRET=1 lets it through on purpose.
    """
    if settings.secret_key == DEV_SECRET_KEY and not settings.allow_dev_secret:
        raise SystemExit(
            f"mp {process}: SECRET_KEY is the development default; set SECRET_KEY to a random value "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))'), start it with `mp up`, "
            "or set MP_ALLOW_DEV_SECRET=1 for local use"
        )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
