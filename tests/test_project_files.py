"""The project's contract files agree with the code: the README's two
commands, `.ci/run`, the settings table, `.env.example` and the compose file."""

from __future__ import annotations

import os
import re
import subprocess
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
    assert {
        "postgres",
        "redis",
        "temporal",
        "temporal-ui",
        "setup",
        "api",
        "tracking",
        "web",
        "worker",
    } <= set(services)
    assert services["temporal"]["image"].startswith("temporalio/auto-setup")
    for name in ("api", "tracking", "web", "worker", "setup"):
        env = services[name]["environment"]
        assert set(env) <= _setting_names(), f"{name} sets unknown settings {set(env) - _setting_names()}"
    assert services["api"]["command"] == ["mp", "api"]
    assert services["tracking"]["command"] == ["mp", "tracking"]
    assert services["worker"]["command"] == ["mp", "worker"]
    assert services["web"]["command"] == ["mp", "web"]


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode == 0:
        return [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    # Not a git checkout (a source archive, a container build): every file.
    skip = {".git", ".venv", ".mp", "__pycache__", ".ruff_cache", ".pytest_cache", "node_modules"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_file_names_a_machine_path():
    # A home directory or a workspace path in a file works on one machine only.
    pattern = re.compile(r"/(root|home|work)/")
    found = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "machine-specific paths:\n" + "\n".join(found)


def test_mp_wrapper_obeys_mp_python(tmp_path):
    # A fresh virtualenv dir makes the wrapper pick a Python; a bad MP_PYTHON
    # is named in one line instead of falling back to another Python.
    env = {**os.environ, "MP_PYTHON": "no-such-python3", "MP_VENV": str(tmp_path / "venv")}
    run = subprocess.run(
        ["sh", str(ROOT / "mp"), "--help"], check=False, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "MP_PYTHON=no-such-python3 is not a Python >= 3.11" in run.stderr
    assert not (tmp_path / "venv").exists()


def test_every_package_is_installed():
    # `pip install .` (the Docker image) and the editable install ship only
    # the packages pyproject.toml lists; one left out imports only from a
    # working directory at the repository's root.
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    patterns = [p.rstrip("*") for p in listed["include"]]
    packages = sorted(
        p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench")
    )
    assert [p for p in packages if p not in patterns] == []
