"""A missing agent image is a session that fails with the fix in its reason, not a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.sandbox.backends.docker import docker_sandbox
from hydra_sandbox.services import open_services
from hydra_sandbox.settings import load_settings
from hydra_sandbox.store import InMemoryStore
from tests.adversarial.results import record_result

pytestmark = pytest.mark.adversarial


class NoImages:
    """A container runtime on which no image exists; anything else it is asked is a test failure."""

    async def image_exists(self, image: str) -> bool:
        return False

    async def list_containers(self, labels: dict[str, str]) -> list[Any]:
        return []  # the server's start-up looks for sessions to re-attach

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the sandbox went on to call runtime.{name} without an image")


async def test_a_missing_agent_image_fails_the_session_naming_hydra_images_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    settings = load_settings(agent_image="hydra-agent:not-built")
    workdir = tmp_path / "repo"
    workdir.mkdir()
    sandbox = docker_sandbox(settings, SecretMasker([]), runtime=NoImages())  # type: ignore[arg-type]
    async with open_services(settings, sandbox=sandbox, store=InMemoryStore()) as services:
        session_id = (await services.manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session[
            "session_id"
        ]
        record = await services.manager.wait(session_id, 30, principal=OPERATOR)
        assert record.status == "failed"
        assert record.reason and "hydra-agent:not-built" in record.reason and "hydra images build" in record.reason
        other = (await services.manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session[
            "session_id"
        ]
        assert (await services.manager.wait(other, 30, principal=OPERATOR)).status == "failed", (
            "the manager stopped working"
        )
    record_result(
        "faults_agent_image_missing",
        "spawning with an agent image that was never built",
        cases=2,
        result="held: sessions fail with 'agent image hydra-agent:not-built is missing (run `hydra images build`)'",
    )
