"""The project's contract files agree with the code: the README's two
commands, `.ci/run`, the settings table, `.env.example` and the compose file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _setting_names() -> set[str]:
    return {(field.alias or name).upper() for name, field in Settings.model_fields.items()}


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block, "README has no sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    up, test = _readme_commands()[:2]
    assert up == "./mp up"
    assert test == "./mp test"
    assert "exec ./mp test" in (ROOT / ".ci" / "run").read_text()


def test_every_setting_is_documented_and_in_env_example():
    readme = (ROOT / "README.md").read_text()
    env_example = (ROOT / ".env.example").read_text()
    for name in _setting_names():
        assert f"| `{name}` |" in readme, f"{name} missing from the README settings table"
        assert re.search(rf"^#? ?{name}=", env_example, re.M), f"{name} missing from .env.example"
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    assert documented <= _setting_names() | {"TEST_DATABASE_URL", "TEST_REDIS_URL"}


def test_compose_runs_the_whole_stack_with_known_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "temporal", "temporal-ui", "setup", "api", "tracking", "worker"} <= set(
        services
    )
    assert services["temporal"]["image"].startswith("temporalio/auto-setup")
    for name in ("api", "tracking", "worker", "setup"):
        env = services[name]["environment"]
        assert set(env) <= _setting_names(), f"{name} sets unknown settings {set(env) - _setting_names()}"
    assert services["api"]["command"] == ["mp", "api"]
    assert services["tracking"]["command"] == ["mp", "tracking"]
    assert services["worker"]["command"] == ["mp", "worker"]
