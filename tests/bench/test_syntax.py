"""Every bench script parses on the lowest Python the project declares, so a
newer-only syntax (such as 3.12's f-string quote reuse) fails the suite
rather than the benchmark run on an older interpreter."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_FILES = sorted((ROOT / "bench").rglob("*.py"))

# 3.12 lets an f-string reuse its own quote inside a replacement field; this
# is the construct bench/tracking.py once shipped with.
QUOTE_REUSE = 'rounds = [1]\nprint(f"{\', \'.join(f"{r}" for r in rounds)}")\n'


def lowest_python() -> tuple[int, int]:
    """The (major, minor) of pyproject's `requires-python = ">=X.Y"`."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)", declared.strip())
    assert found, f"requires-python {declared!r} is not of the form '>=X.Y'"
    return int(found.group(1)), int(found.group(2))


def syntax_errors_on(version: tuple[int, int], *paths: Path) -> str:
    """Ruff's parser, told the target version, lists syntax that version lacks.

    `ast.parse(feature_version=...)` is best effort: running on 3.12+ it
    accepts the f-string quote reuse that 3.11 rejects, so the suite asks
    ruff's version-aware parser as well.
    """
    ruff = [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--output-format", "concise"]
    result = subprocess.run(
        [*ruff, f"--target-version=py{version[0]}{version[1]}", "--select=E9", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_bench_has_scripts():
    names = {p.name for p in BENCH_FILES}
    assert {"tracking.py", "segments.py", "email.py"} <= names


@pytest.mark.parametrize("path", BENCH_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_bench_script_parses_with_the_lowest_declared_grammar(path: Path):
    ast.parse(path.read_text(), filename=str(path), feature_version=lowest_python())


def test_bench_scripts_use_no_syntax_newer_than_the_lowest_declared_python():
    assert syntax_errors_on(lowest_python(), *BENCH_FILES) == ""


def test_the_version_check_rejects_newer_syntax(tmp_path: Path):
    script = tmp_path / "newer.py"
    script.write_text(QUOTE_REUSE)
    assert syntax_errors_on((3, 12), script) == ""
    found = syntax_errors_on((3, 11), script)
    assert "Cannot reuse outer quote character in f-strings" in found
