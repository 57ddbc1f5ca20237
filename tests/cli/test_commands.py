"""The `mp` command's subcommands, run as a user would run them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from definitions import search_attributes
from tests.support.db import count
from tests.support.servers import free_port
from tests.support.temporal import new_namespace
from worker.setup import EVENT_PARTITIONS_SCHEDULE

ROOT = Path(__file__).resolve().parents[2]


async def mp(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `mp ...` in a subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


def _env(settings) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
    }


async def test_help_lists_every_command():
    result = await mp("--help")
    assert result.returncode == 0
    for command in ("up", "status", "api", "tracking", "worker", "db", "keys", "seed", "temporal"):
        assert command in result.stdout
    for group, sub in (("db", "upgrade"), ("keys", "create"), ("temporal", "setup")):
        assert sub in (await mp(group, "--help")).stdout


async def test_keys_create_json_gives_working_keys(settings, tracking_app, api_app, engine):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    result = await mp("keys", "create", "--workspace", name, "--json", env=_env(settings))
    assert result.returncode == 0, result.stderr
    keys = json.loads(result.stdout)
    assert set(keys) == {"workspace_id", "public_key", "secret_key"}
    assert keys["public_key"].startswith("pk_") and keys["secret_key"].startswith("sk_")
    async with httpx.AsyncClient() as client:
        tracked = await client.post(
            f"{tracking_app.state.base_url}/track",
            json={"userId": "cli", "event": "E"},
            headers={"Authorization": f"Bearer {keys['public_key']}"},
        )
        listed = await client.get(
            f"{api_app.state.base_url}/api/v1/profiles",
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
        )
    assert tracked.status_code == 200
    assert [p["external_id"] for p in listed.json()["data"]] == ["cli"]
    # Same name again: same workspace, another key pair.
    again = json.loads((await mp("keys", "create", "--workspace", name, "--json", env=_env(settings))).stdout)
    assert again["workspace_id"] == keys["workspace_id"] and again["secret_key"] != keys["secret_key"]
    human = await mp("keys", "create", "--workspace", name, env=_env(settings))
    assert "pk_" in human.stdout and "sk_" in human.stdout


async def test_db_upgrade_is_idempotent(settings, engine):
    result = await mp("db", "upgrade", env=_env(settings))
    assert result.returncode == 0, result.stderr
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == head


async def test_seed_fills_a_workspace_with_progress(settings, engine):
    name = f"seed-{uuid.uuid4().hex[:8]}"
    result = await mp(
        "seed", "--workspace", name, "--profiles", "40", "--events-per-profile", "5", env=_env(settings)
    )
    assert result.returncode == 0, result.stderr
    assert "seeding" in result.stdout and "240/240" in result.stdout
    async with engine.connect() as conn:
        ws = (await conn.execute(text("SELECT id FROM workspaces WHERE name = :n"), {"n": name})).scalar_one()
    assert await count(engine, "SELECT count(*) FROM profiles WHERE workspace_id = :ws", ws=ws) == 40
    assert await count(engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=ws) == 200
    assert "pk_" in result.stdout


async def test_temporal_setup_on_an_external_cluster(temporal_client, temporal_address, settings):
    namespace = await new_namespace(temporal_client, "setup")
    env = _env(settings) | {"TEMPORAL_ADDRESS": temporal_address, "TEMPORAL_NAMESPACE": namespace}
    for _ in range(50):  # a new namespace takes a moment to be served
        result = await mp("temporal", "setup", env=env)
        if result.returncode == 0:
            break
        await asyncio.sleep(0.3)
    assert result.returncode == 0, result.stderr
    assert "schedules created: " + EVENT_PARTITIONS_SCHEDULE in result.stdout
    listed = await temporal_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    assert set(search_attributes.NAMES) <= set(listed.custom_attributes)
    # Idempotent: a second run adds nothing and succeeds.
    second = await mp("temporal", "setup", env=env)
    assert second.returncode == 0 and "none (all present)" in second.stdout


async def test_unreachable_service_is_one_line_not_a_traceback(tmp_path):
    closed = free_port()
    env = {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/marketing",
        "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{closed}",
        "MP_DATA_DIR": str(tmp_path / ".mp"),  # no `mp up` state here
    }
    postgres = (
        f"mp: PostgreSQL at 127.0.0.1:{closed} is not reachable: connection refused — is `./mp up` running?"
    )
    for args, line in (
        (("keys", "create", "--workspace", "w", "--json"), postgres),
        (("db", "upgrade"), postgres),
        (("seed", "--profiles", "1"), postgres),
        (("temporal", "setup"), postgres.replace("PostgreSQL", "Temporal")),
    ):
        result = await mp(*args, env=env)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.strip() == line, args
        assert "Traceback" not in result.stderr and result.stdout == ""


async def test_missing_database_is_one_line(settings):
    missing = settings.database_url.rsplit("/", 1)[0] + "/mp_no_such_database"
    result = await mp("keys", "create", "--workspace", "w", env={"DATABASE_URL": missing})
    assert result.returncode == 1
    assert result.stderr.strip() == 'mp: PostgreSQL failed: database "mp_no_such_database" does not exist'


async def test_stack_file_is_used_unless_a_setting_is_given(settings, tmp_path):
    # What `mp up` leaves in its data dir (cli/stack.py), here naming a
    # PostgreSQL that is not running.
    data_dir, closed = tmp_path / ".mp", free_port()
    data_dir.mkdir()
    (data_dir / "up.json").write_text(
        json.dumps(
            {
                "pid": 0,
                "stopped": True,
                "services": {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/m"},
            }
        )
    )
    base = {k: v for k, v in _env(settings).items() if k != "DATABASE_URL"} | {"MP_DATA_DIR": str(data_dir)}
    # An empty setting counts as not given (as for `mp up`).
    from_stack = await mp("keys", "create", "--workspace", "stack", "--json", env=base | {"DATABASE_URL": ""})
    assert from_stack.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{closed} is not reachable" in from_stack.stderr
    given = await mp(
        "keys", "create", "--workspace", "stack", "--json", env=base | {"DATABASE_URL": settings.database_url}
    )
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["secret_key"].startswith("sk_")
