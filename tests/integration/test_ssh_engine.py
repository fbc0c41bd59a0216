"""The second engine reached over ``ssh://`` (tests/ssh_engine.py: a test sshd, key-only, in front of it):
the API over ``docker system dial-stdio``, an image streamed in, ``hydra images copy``/``hydra doctor``,
the refusals (unknown host key, a key the engine does not authorise, no docker CLI on the far side) each
naming ``HYDRA_DOCKER_HOST`` and what to do, and one whole session there (spawn, its first output, preview,
apply) with the real agent image, Codex and a gateway container beside it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import pytest

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.image_copy import copy_image
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.integration.test_remote_flow import RUN_DEADLINE_S, bridge_address, until_said
from tests.managers import manager_for
from tests.remote_engine import RemoteEngine, cli_copies_and_doctor_passes
from tests.ssh_engine import SshEngine

pytestmark = pytest.mark.docker
BASE_IMAGE = "hydra-local/debian:bookworm"
PROCESS_DEADLINE_S = 15.0


def _dial_processes(port: int) -> list[str]:
    """The ssh processes of this machine that carry Docker's API to the test sshd on ``port``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"ssh" and b"dial-stdio" in argv and str(port).encode() in argv:
            found.append(cmdline.parent.name)
    return found


def test_the_api_and_an_image_stream_reach_the_engine_over_ssh_and_no_ssh_process_outlives_the_client(
    ssh_engine: SshEngine, remote_engine: RemoteEngine
) -> None:
    engine = ssh_engine.engine()
    client = engine_client(engine)
    local = docker.from_env()
    try:
        assert client.info()["ID"] == docker.DockerClient(base_url=remote_engine.socket_url).info()["ID"]
        copied = copy_image(local, client, [BASE_IMAGE])
        assert not copied.skipped and copied.bytes_sent > 0
        assert client.images.get(BASE_IMAGE).id == local.images.get(BASE_IMAGE).id
        assert _dial_processes(engine.port or 22), "the API did not go through ssh"
    finally:
        client.images.remove(BASE_IMAGE)  # the tag this test added to the second engine
        client.close()
    deadline = time.monotonic() + PROCESS_DEADLINE_S
    while _dial_processes(engine.port or 22):
        assert time.monotonic() < deadline, f"ssh processes left: {_dial_processes(engine.port or 22)}"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("key", "known", "says", "hint"),
    [
        ("hydra", False, "host key is not in known_hosts", "ssh-keyscan -p"),
        ("stranger", True, "refused every key offered", "authorized_keys"),
        ("nodocker", True, "docker CLI is not on the far side", "install the docker CLI"),
    ],
    ids=["unknown-host-key", "key-not-authorised", "no-docker-cli"],
)
def test_an_ssh_engine_that_cannot_be_used_is_refused_naming_the_setting_and_the_fix(
    ssh_engine: SshEngine, key: str, known: bool, says: str, hint: str
) -> None:
    with pytest.raises(RuntimeUnavailableError) as refused:
        engine_client(ssh_engine.engine(key, known=known))
    assert str(refused.value).startswith(f"HYDRA_DOCKER_HOST: cannot reach {ssh_engine.url}: ")
    assert says in str(refused.value) and hint in (refused.value.hint or "")


def test_the_cli_copies_to_and_doctor_checks_an_engine_over_ssh(
    ssh_engine: SshEngine, remote_agent_image: str, remote_gateway_image: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("HYDRA_DOCKER_SSH_CONFIG", str(ssh_engine.config()))
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_AGENT_IMAGE", remote_agent_image)
    url = ssh_engine.url
    cli_copies_and_doctor_passes(url, "over ssh", monkeypatch)


def ssh_settings(base: HydraSettings, ssh_engine: SshEngine, model: ScriptedModel) -> HydraSettings:
    return load_settings(
        data_home=base.data_home, model_base_url=model.base_url, model="test-model",
        docker_host=ssh_engine.url, docker_ssh_config=ssh_engine.config(),
    )  # fmt: skip


async def test_a_session_on_an_engine_over_ssh_runs_previews_and_applies(
    agent_image: str, remote_agent_image: str, remote_gateway_image: str, remote_engine: RemoteEngine,
    ssh_engine: SshEngine, repo: Path, settings: HydraSettings,
) -> None:  # fmt: skip
    script = {
        "turns": [
            [{"exec": "sed -i 's/a - b/a + b/' src/calc.py && echo notes > NOTES.md && echo edited-$((6*7))"}],
            [{"message": "Fixed add()."}],
        ]
    }
    async with ScriptedModel(Script.model_validate(script), host=bridge_address(remote_engine)) as model:
        s = ssh_settings(settings, ssh_engine, model)
        manager = manager_for(s, max_concurrent=1)
        await manager.start()
        try:
            request = SpawnRequest(working_dir=str(repo), custom_prompt="fix add")
            spawned = await manager.spawn(request, principal=OPERATOR)
            session_id = spawned.session["session_id"]
            await until_said(manager, session_id, "edited-42")
            record = await manager.wait(session_id, RUN_DEADLINE_S, principal=OPERATOR)
            assert record.status == SessionStatus.AWAITING_APPROVAL, record.reason
            assert record.host == ssh_engine.url.replace("root@", ""), record.host
            diff = await manager.diff(session_id, principal=OPERATOR)
            assert {f.path: f.status for f in diff.files} == {"src/calc.py": "modified", "NOTES.md": "added"}
            assert (repo / "src" / "calc.py").read_text().endswith("a - b\n"), "the host changed before apply"
            await manager.apply(session_id, True, OPERATOR, digest=diff.digest)
            assert (repo / "src" / "calc.py").read_text().endswith("a + b\n")
            assert (repo / "NOTES.md").read_text() == "notes\n"
            model.raise_errors()
        finally:
            await manager.close()
            runtime = engine_runtime(ssh_engine.engine())
            await collect_garbage(runtime, set(), home=home_label(s.data_home))
            await asyncio.to_thread(runtime.client.close)
