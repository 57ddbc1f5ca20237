"""`./mp test` lints the tree before it runs pytest: findings stop the run
with one clear line; a clean tree runs pytest with the given arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLEAN = '"""A clean module."""\n\nVALUE = 1\n'
PASSING_TEST = '"""A test that passes."""\n\n\ndef test_ok():\n    assert 1 + 1 == 2\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the wrapper and pyproject.toml around a one-test tree, with a
    stand-in venv that forwards to the running interpreter and ruff (so the
    wrapper finds it installed and skips the pip step)."""
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "mp", root / "mp")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "clean.py").write_text(CLEAN)
    (root / "tests" / "test_ok.py").write_text(PASSING_TEST)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency and must be installed"
    for name, target in (("python", sys.executable), ("ruff", ruff)):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{target}" "$@"\n')
        (bin_dir / name).chmod(0o755)
    stamp = subprocess.run(
        ["sh", "-c", 'cat "$1" | cksum', "sh", str(root / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "venv" / ".mp-installed").write_text(stamp.stdout)
    return root


def run_mp_test(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`./mp test ARGS` in the copy, with its stand-in venv."""
    environ = {k: v for k, v in os.environ.items() if k != "MP_SKIP_LINT"}
    environ |= {"MP_VENV": str(project.parent / "venv"), **env}
    return subprocess.run(
        ["sh", str(project / "mp"), "test", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_clean_tree_runs_pytest_with_the_given_arguments(project: Path):
    done = run_mp_test(project, "-q", "-p", "no:cacheprovider", "tests/test_ok.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_a_lint_finding_fails_before_any_test_runs(project: Path):
    (project / "clean.py").write_text('"""Unused import."""\n\nimport os\n')
    done = run_mp_test(project, "-q", "-p", "no:cacheprovider")
    assert done.returncode == 1
    assert "F401" in done.stdout
    assert "mp test: lint failed: 'ruff check .' has findings" in done.stderr
    assert "passed" not in done.stdout


def test_unformatted_code_fails_before_any_test_runs(project: Path):
    (project / "clean.py").write_text('"""Unformatted."""\n\nVALUE=[1,2]\n')
    done = run_mp_test(project, "-q", "-p", "no:cacheprovider")
    assert done.returncode == 1
    assert "clean.py" in done.stdout + done.stderr
    assert "mp test: lint failed: 'ruff format --check .' would reformat" in done.stderr
    assert "passed" not in done.stdout


def test_mp_skip_lint_runs_the_tests_anyway(project: Path):
    (project / "clean.py").write_text('"""Unused import."""\n\nimport os\n')
    done = run_mp_test(project, "-q", "-p", "no:cacheprovider", MP_SKIP_LINT="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_real_tree_has_no_lint_findings():
    for command in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _sdk_project(project: Path, tools: list[str]) -> dict[str, str]:
    """Give the copy an SDK whose npm install is current, and a PATH of
    only `tools` (plus a stand-in npm): no apt-get, no sudo, no chromium."""
    sdk = project / "sdk"
    (sdk / "node_modules").mkdir(parents=True)
    (sdk / "package.json").write_text("{}")
    (sdk / "package-lock.json").write_text("{}")
    lock = subprocess.run(
        ["sh", "-c", 'cksum < "$1"', "sh", str(sdk / "package-lock.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    (sdk / "node_modules" / ".mp-installed").write_text(lock.stdout)
    bin_dir = project.parent / "tools"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "npm").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "npm").chmod(0o755)
    return {"PATH": str(bin_dir)}


TOOLS = ["sh", "cat", "cksum", "dirname", "id", "grep"]


def test_missing_chromium_fails_with_one_line(project: Path):
    env = _sdk_project(project, TOOLS)
    done = run_mp_test(project, "-q", MP_SKIP_LINT="1", MP_CHROMIUM=str(project / "no-chromium"), **env)
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines()[-1].startswith("mp test: the browser SDK tests need Chromium at ")
    ), done.stderr
    assert "passed" not in done.stdout


def test_with_chromium_present_the_tests_run(project: Path):
    env = _sdk_project(project, TOOLS)
    chromium = project / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    done = run_mp_test(
        project, "-q", "-p", "no:cacheprovider", MP_SKIP_LINT="1", MP_CHROMIUM=str(chromium), **env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_missing_node_fails_with_one_line(project: Path):
    env = _sdk_project(project, TOOLS)
    (project.parent / "tools" / "npm").unlink()
    done = run_mp_test(project, "-q", MP_SKIP_LINT="1", **env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "mp test: the SDK tests need Node.js >= 20 and npm on PATH (Debian: apt-get install nodejs npm)"
    )
