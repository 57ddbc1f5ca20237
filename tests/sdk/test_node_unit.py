"""The SDK's own unit tests (node's test runner: queueing, batching,
retry/backoff, persistence, reset, beacons; the committed browser build
matches src/ and stays under 5 KB min+gzip) run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.sdk.conftest import SDK


def test_sdk_unit_tests_pass():
    node = shutil.which("node")
    if node is None or not (SDK / "node_modules" / "esbuild").is_dir():
        pytest.fail("the SDK's npm devDependencies are missing: run ./mp test (it runs npm ci in sdk/)")
    files = sorted(str(p.relative_to(SDK)) for p in (SDK / "test").glob("*.test.js"))
    assert files, "sdk/test has no *.test.js"
    run = subprocess.run(
        [node, "--test", *files], cwd=SDK, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout
