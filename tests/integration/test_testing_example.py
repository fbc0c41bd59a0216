"""examples/testing, a project outside the package that uses only hydra_sandbox.testing's public API,
runs green as its own pytest session: a scripted agent fixes a failing test in-process and, through
the server image, over HTTP. Its duration is recorded (junit property ``example_seconds``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from hydra_sandbox.settings import REPO_ROOT

pytestmark = pytest.mark.docker
EXAMPLE = REPO_ROOT / "examples" / "testing"


def test_the_testing_example_project_passes_as_its_own_pytest_run(
    record_property: Callable[[str, object], None],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}  # as an outside project
    env.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # no registry here to pull the reaper from
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hydra-require-docker", "-q", "-rA"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    seconds = time.monotonic() - started
    record_property("example_seconds", round(seconds, 1))
    print(f"examples/testing: {seconds:.1f} s\n{run.stdout[-1500:]}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "2 passed" in run.stdout, run.stdout[-3000:]
