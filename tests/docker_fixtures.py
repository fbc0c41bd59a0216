"""Fixtures for the Docker suites (tests/integration, tests/adversarial): the real agent image, a
repository owned by a non-root uid, settings in a temporary data home, and a check that every test
leaves nothing with Hydra's labels behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from hydra_sandbox.images import build_agent_image
from hydra_sandbox.settings import HydraSettings, load_settings

AGENT_UID = 1234


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    client = docker.from_env()
    client.ping()
    return client


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    """The real agent image (built by scripts/setup; built here if missing, which skips when present)."""
    return build_agent_image(load_settings()).tag


def hydra_objects(client: docker.DockerClient) -> list[str]:
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": "hydra.session"})]
    found += [f"volume {v.name}" for v in client.volumes.list(filters={"label": "hydra.session"})]
    found += [f"network {n.name}" for n in client.networks.list(filters={"label": "hydra.session"})]
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    if "docker" not in request.keywords:
        yield
        return
    client = docker.from_env()
    before = set(hydra_objects(client))
    yield
    leftover = set(hydra_objects(client)) - before
    assert not leftover, f"left behind: {sorted(leftover)}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small project owned by a non-root uid, so the O(1) overlay path is the one exercised."""
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (root / "test_calc.py").write_text("from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (root / "src" / "__init__.py").write_text("")
    (root / ".env").write_text("DATABASE_URL=postgres://app:hunter2hunter2@db/app\n")
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "config").write_text("[remote]\n\turl = https://token@example.invalid/x\n")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "prod.key").write_text("do-not-read\n")
    subprocess.run(["chown", "-R", f"{AGENT_UID}:{AGENT_UID}", str(root)], check=True)
    os.chmod(tmp_path, 0o755)
    return root


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    return load_settings(model="test-model")
