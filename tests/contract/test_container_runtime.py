"""The ContainerRuntime contract, over the in-memory fake and the real Docker runtime (marked ``docker``):
the orchestrator's unit tests trust the fake only as far as these same tests hold for Docker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError, UnsafeSpecError
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec

TALK = ["sh", "-c", "echo out; echo err >&2; exit 3"]
SLEEP = ["sleep", "60"]
FAKE_IMAGE = "hydra-agent:fake"


def fake_program(spec: ContainerSpec) -> FakeProgram:
    """What the real image does with the argv the contract uses."""
    if spec.argv == TALK:
        return FakeProgram(output=[("stdout", b"out\n"), ("stderr", b"err\n")], exit_code=3)
    return FakeProgram(keeps_running=True)


@pytest.fixture(
    params=["fake", pytest.param("docker", marks=pytest.mark.docker), pytest.param("remote", marks=pytest.mark.docker)]
)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ContainerRuntime, str]]:
    """The fake, the local engine, and a second engine over TCP with TLS (tests/remote_engine.py)."""
    if request.param == "fake":
        yield FakeRuntime(fake_program, images=[FAKE_IMAGE]), FAKE_IMAGE
        return
    from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime
    from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime

    if request.param == "docker":
        yield DockerRuntime(), request.getfixturevalue("agent_image")
        return
    image = request.getfixturevalue("remote_agent_image")
    yield engine_runtime(request.getfixturevalue("remote_engine").engine), image


@pytest.fixture
def session() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


def spec(image: str, session: str, argv: list[str]) -> ContainerSpec:
    labels = {LABEL_SESSION: session, LABEL_ROLE: "agent", "hydra.test": "1"}
    return ContainerSpec(image=image, argv=argv, user="1000:1000", labels=labels, name=f"hydra-{session}")


async def test_a_container_prints_on_both_streams_and_reports_its_exit_code(
    subject: tuple[ContainerRuntime, str], session: str
) -> None:
    runtime, image = subject
    container_id = await runtime.create(spec(image, session, TALK))
    try:
        await runtime.start(container_id)
        seen: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        async for stream, chunk in runtime.stream_logs(container_id):
            seen[stream] += chunk
        assert seen == {"stdout": b"out\n", "stderr": b"err\n"}
        assert await runtime.wait(container_id, timeout_s=30) == 3
        info = await runtime.inspect(container_id)
        assert info.status == "exited" and info.exit_code == 3 and info.labels[LABEL_SESSION] == session
        again = [chunk async for _stream, chunk in runtime.stream_logs(container_id)]
        assert b"".join(again).count(b"out\n") == 1, "a second read replays the log from the start, once"
    finally:
        await runtime.remove(container_id)
    assert await runtime.list_containers({LABEL_SESSION: session}) == []


async def test_stop_ends_a_running_container_and_labels_find_it_meanwhile(
    subject: tuple[ContainerRuntime, str], session: str
) -> None:
    runtime, image = subject
    container_id = await runtime.create(spec(image, session, SLEEP))
    try:
        await runtime.start(container_id)
        found = await runtime.list_containers({LABEL_SESSION: session, LABEL_ROLE: "agent"})
        assert [(c.id, c.status) for c in found] == [(container_id, "running")]
        assert await runtime.wait(container_id, timeout_s=0.2) is None, "a running container has no exit code yet"
        await runtime.stop(container_id, grace_s=1)
        assert await runtime.wait(container_id, timeout_s=30) not in {None, 0}
        assert (await runtime.inspect(container_id)).status == "exited"
    finally:
        await runtime.remove(container_id)
    await runtime.remove(container_id)  # already gone: not an error


async def test_a_spec_that_is_not_hardened_is_refused_before_anything_is_made(
    subject: tuple[ContainerRuntime, str], session: str
) -> None:
    runtime, image = subject
    weakened = spec(image, session, TALK).model_copy(update={"cap_add": ["SYS_ADMIN"]})
    with pytest.raises(UnsafeSpecError, match="cap_add"):
        await runtime.create(weakened)
    assert await runtime.list_containers({LABEL_SESSION: session}) == []


async def test_a_missing_image_and_a_taken_name_are_runtime_errors(
    subject: tuple[ContainerRuntime, str], session: str
) -> None:
    runtime, image = subject
    with pytest.raises(RuntimeUnavailableError):
        await runtime.create(spec("hydra-agent:never-built", session, TALK))
    assert not await runtime.image_exists("hydra-agent:never-built") and await runtime.image_exists(image)
    container_id = await runtime.create(spec(image, session, TALK))
    try:
        with pytest.raises(RuntimeUnavailableError, match="in use|Conflict"):
            await runtime.create(spec(image, session, TALK))
    finally:
        await runtime.remove(container_id)


async def test_volumes_are_found_by_label_and_removing_twice_is_fine(
    subject: tuple[ContainerRuntime, str], session: str
) -> None:
    runtime, _image = subject
    name = f"hydra-{session}"
    await runtime.create_volume(name, {LABEL_SESSION: session, "hydra.test": "1"})
    try:
        assert [v.name for v in await runtime.list_volumes({LABEL_SESSION: session})] == [name]
    finally:
        await runtime.remove_volume(name)
    await runtime.remove_volume(name)
    assert await runtime.list_volumes({LABEL_SESSION: session}) == []


async def test_image_info_names_an_image_by_id_with_its_labels_and_a_missing_one_as_none(
    subject: tuple[ContainerRuntime, str],
) -> None:
    runtime, image = subject
    assert await runtime.image_info("hydra-agent:never-built") is None
    info = await runtime.image_info(image)
    assert info is not None and info.id and info.id == (await runtime.image_info(image) or info).id
    assert isinstance(info.labels, dict)
