"""The `mp` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Annotated

import typer

from cli.stack import reaching, use_stack
from core.settings import get_settings, refuse_dev_secret

app = typer.Typer(
    help="Marketing platform: tracking, profiles and automation on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Workspaces and API keys.", no_args_is_help=True)
temporal_app = typer.Typer(help="Temporal set-up for an external cluster.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(temporal_app, name="temporal")


def _exit(code: int = 0) -> None:
    # temporalio can crash in interpreter teardown (PyGILState_Release);
    # leave explicitly once the work is done so a clean run ends clean.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def up() -> None:
    """Start everything: PostgreSQL, Redis and Temporal (embedded unless
    DATABASE_URL / REDIS_URL / TEMPORAL_ADDRESS are set), migrations, the
    default workspace, then the api (:3001), tracking (:3002), web
    dashboard (:3000) and worker processes. Ctrl-C stops it all; data stays in .mp/."""
    from cli.up import run_up

    _exit(run_up(get_settings()))


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False) -> None:
    """Show what the `mp up` of this data dir runs: each child's pid, state
    (up, restarting, down), restarts and port. Exit code 1 when no `mp up`
    is running."""
    from cli.stack import checked_children, running_state, status_lines

    data_dir = get_settings().data_dir
    if as_json:
        state = running_state(data_dir)
        if state is None:
            typer.echo(json.dumps({"running": False}))
            _exit(1)
        typer.echo(json.dumps({"running": True, "pid": state["pid"], "children": checked_children(state)}))
        _exit(0)
    lines = status_lines(data_dir)
    if lines is None:
        typer.echo(f"mp up is not running (data dir {data_dir.resolve()})")
        _exit(1)
    typer.echo("\n".join(lines))
    _exit(0)


@app.command()
def api() -> None:
    """Serve the management API (/api/v1, docs at /docs) on PORT (3001)."""
    import uvicorn

    settings = use_stack()
    refuse_dev_secret(settings, "api")
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port, log_level="info")


@app.command()
def tracking(
    workers: Annotated[int, typer.Option(help="Server processes sharing the port.")] = 1,
) -> None:
    """Serve the tracking API (/track, /identify, ...) on TRACKING_PORT (3002)."""
    import uvicorn

    settings = use_stack()
    refuse_dev_secret(settings, "tracking")
    uvicorn.run(
        "tracking.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.tracking_port,
        workers=workers,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


@app.command()
def web() -> None:
    """Serve the dashboard on WEB_PORT (3000): sign in with a workspace secret key."""
    import uvicorn

    settings = use_stack()
    refuse_dev_secret(settings, "web")
    uvicorn.run(
        "web.app:create_app", factory=True, host=settings.host, port=settings.web_port, log_level="info"
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker (every workflow and activity)."""
    from worker.main import run_worker

    settings = use_stack()
    refuse_dev_secret(settings, "worker")
    _logging()
    try:
        asyncio.run(run_worker(settings))
    except Exception:
        # Leave through _exit on failure too: a crash in teardown would hide the real error.
        logging.getLogger("worker").exception("worker failed")
        _exit(1)
    _exit(0)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations to DATABASE_URL."""
    from db.migrate import upgrade

    settings = use_stack()
    with reaching(settings, "PostgreSQL"):
        upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@keys_app.command("create")
def keys_create(
    workspace: Annotated[str, typer.Option(help="Workspace name (created if missing).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Create a public (pk_) and a secret (sk_) key for a workspace. Keys
    are shown once; only their hashes are stored."""
    from db.engine import create_engine, create_sessionmaker, session_scope
    from workspaces.service import create_workspace_keys

    settings = use_stack()

    async def _run() -> dict:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                keys = await create_workspace_keys(session, workspace)
        finally:
            await engine.dispose()
        return {
            "workspace_id": str(keys.workspace_id),
            "public_key": keys.public_key,
            "secret_key": keys.secret_key,
        }

    with reaching(settings, "PostgreSQL"):
        keys = asyncio.run(_run())
    if as_json:
        typer.echo(json.dumps(keys))
    else:
        typer.echo(f"workspace   {workspace} ({keys['workspace_id']})")
        typer.echo(f"public key  {keys['public_key']}   (tracking API, safe in browsers)")
        typer.echo(f"secret key  {keys['secret_key']}   (management API, keep it secret)")


@keys_app.command("rotate-secrets")
def keys_rotate_secrets() -> None:
    """Re-encrypt every provider credential with the first of SECRETS_KEYS
    (and encrypt any plaintext left). Run it with the same SECRETS_KEYS and
    SECRET_KEY as the apps, after putting a new key first; then the old key
    can go. See the README's "Security" section."""
    from core.secret_box import SecretBox, SecretUnreadable
    from db.engine import create_engine, create_sessionmaker, session_scope
    from delivery.service import rotate_provider_secrets

    settings = use_stack()
    # The provider key `mp up` generated into its data dir, when the environment gives none.
    generated = settings.data_dir / "secrets_keys"
    if "secrets_keys" not in settings.model_fields_set and generated.exists():
        settings = settings.model_copy(update={"secrets_keys": generated.read_text().strip()})

    async def _run() -> int:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                return await rotate_provider_secrets(session, SecretBox.from_settings(settings))
        finally:
            await engine.dispose()

    try:
        with reaching(settings, "PostgreSQL"):
            rotated = asyncio.run(_run())
    except SecretUnreadable as exc:
        typer.echo(f"mp: {exc}; nothing was changed", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"providers re-encrypted: {rotated}")


@app.command()
def seed(
    workspace: Annotated[str, typer.Option(help="Workspace to fill.")] = "demo",
    profiles: Annotated[int, typer.Option(min=1, help="Profiles to create.")] = 1000,
    events_per_profile: Annotated[int, typer.Option(min=0, help="Events per profile.")] = 20,
    days: Annotated[int, typer.Option(min=1, help="Spread events over this many past days.")] = 90,
) -> None:
    """Fill a demo workspace with profiles and events (through the same
    ingestion path as the tracking API), with a progress bar."""
    from cli.seed import run_seed

    settings = use_stack()
    with reaching(settings, "PostgreSQL", "Redis"):
        keys = asyncio.run(run_seed(settings, workspace, profiles, events_per_profile, days))
    typer.echo(f"\nworkspace   {workspace} ({keys.workspace_id})")
    typer.echo(f"public key  {keys.public_key}")
    typer.echo(f"secret key  {keys.secret_key}")


@temporal_app.command("setup")
def temporal_setup() -> None:
    """Register search attributes and create the schedules on TEMPORAL_ADDRESS."""
    from core.clients import connect_temporal
    from worker.setup import setup_temporal

    settings = use_stack()

    async def _run() -> tuple[list[str], list[str]]:
        client = await connect_temporal(settings)
        return await setup_temporal(client, settings)

    with reaching(settings, "Temporal"):
        added, created = asyncio.run(_run())
    typer.echo(f"search attributes added: {', '.join(added) or 'none (all present)'}")
    typer.echo(f"schedules created: {', '.join(created) or 'none (all present, updated)'}")
    _exit(0)


def main() -> None:
    """Entry point of the `mp` script."""
    app()
