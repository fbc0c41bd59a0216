"""A second, real Docker engine reached over TCP with mutual TLS (tests/remote_engine.py): TLS refused
without the right client certificate, re-attach from a new runtime object, gc by labels, images copied
without a registry, and ``hydra doctor``/``hydra images copy`` against it. The ContainerRuntime contract
runs against it too (tests/contract/test_container_runtime.py, ``remote``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.tls
import pytest
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.errors import RuntimeUnavailableError, UnsafeSpecError
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.image_copy import copy_image
from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, LABEL_SESSION, ContainerSpec, Mount, home_label
from tests.remote_engine import RemoteEngine, cli_copies_and_doctor_passes, make_tls

pytestmark = pytest.mark.docker
LINES = [f"line{i}" for i in range(1, 6)]


def agent_spec(image: str, session: str, argv: list[str], home: str = "remote-test") -> ContainerSpec:
    labels = {LABEL_SESSION: session, LABEL_ROLE: "agent", LABEL_HOME: home, "hydra.test": "1"}
    return ContainerSpec(image=image, argv=argv, user="1000:1000", labels=labels, name=f"hydra-{session}")


def session_id() -> str:
    return f"remote-{uuid.uuid4().hex[:10]}"


def test_the_main_engines_default_bridge_survives_the_second_engine(remote_engine: RemoteEngine) -> None:
    """dockerd started with ``--bridge=none`` deletes ``docker0``, the main engine's default bridge, which
    broke every later container on it; the second engine has a bridge of its own instead."""
    options = docker.from_env().networks.get("bridge").attrs["Options"]
    name = options.get("com.docker.network.bridge.name", "docker0")
    assert Path("/sys/class/net", name).exists(), f"the main engine's bridge {name} is gone"
    assert docker.DockerClient(base_url=remote_engine.socket_url).networks.get("bridge")


def test_the_engine_refuses_a_client_without_a_certificate_or_with_one_of_another_ca(
    remote_engine: RemoteEngine, tmp_path: Path
) -> None:
    tls = remote_engine.engine.tls
    assert tls is not None
    only_ca = docker.tls.TLSConfig(ca_cert=str(tls.ca), verify=True)
    no_cert = DockerRuntime(base_url=remote_engine.engine.url, tls=only_ca)
    with pytest.raises(RuntimeUnavailableError, match=f"cannot reach {remote_engine.engine.url}"):
        _ = no_cert.client
    make_tls(tmp_path / "other", common="another-ca")
    other = tmp_path / "other"
    stranger = docker.tls.TLSConfig(
        client_cert=(str(other / "cert.pem"), str(other / "key.pem")), ca_cert=str(tls.ca), verify=True
    )
    with pytest.raises(RuntimeUnavailableError, match="cannot reach"):
        _ = DockerRuntime(base_url=remote_engine.engine.url, tls=stranger).client
    assert engine_client(remote_engine.engine).ping(), "the engine's own client certificate is accepted"


async def test_a_new_runtime_object_finds_a_running_container_by_labels_and_reads_its_whole_output_once(
    remote_engine: RemoteEngine, remote_agent_image: str
) -> None:
    session = session_id()
    script = "for l in " + " ".join(LINES) + "; do echo $l; sleep 0.2; done"
    first = engine_runtime(remote_engine.engine)
    container_id = await first.create(agent_spec(remote_agent_image, session, ["sh", "-c", script]))
    try:
        await first.start(container_id)
        following = first.stream_logs(container_id)
        _stream, chunk = await anext(following)
        assert chunk.startswith(b"line1")
        await following.aclose()  # type: ignore[attr-defined]  # the first Hydra goes away after the first line
        second = engine_runtime(remote_engine.engine)  # a restarted Hydra: a new client, same engine
        found = await second.list_containers({LABEL_SESSION: session, LABEL_ROLE: "agent"})
        assert [c.id for c in found] == [container_id]
        output = b"".join([chunk async for _stream, chunk in second.stream_logs(container_id)])
        assert output.decode().split() == LINES, "every line once, in order, from the start"
        assert await second.wait(container_id, timeout_s=30) == 0
    finally:
        await first.remove(container_id)


async def test_gc_removes_only_this_homes_objects_of_sessions_it_no_longer_needs(
    remote_engine: RemoteEngine, remote_agent_image: str
) -> None:
    runtime = engine_runtime(remote_engine.engine)
    gone, kept, foreign = session_id(), session_id(), session_id()
    made = {
        gone: await runtime.create(agent_spec(remote_agent_image, gone, ["true"], home="mine")),
        kept: await runtime.create(agent_spec(remote_agent_image, kept, ["true"], home="mine")),
        foreign: await runtime.create(agent_spec(remote_agent_image, foreign, ["true"], home="another")),
    }
    await runtime.create_volume(f"hydra-{gone}", {LABEL_SESSION: gone, LABEL_HOME: "mine"})
    try:
        report = await collect_garbage(runtime, {kept}, home="mine")
        assert report.containers == [f"hydra-{gone}"] and report.volumes == [f"hydra-{gone}"]
        left = {c.id for c in await runtime.list_containers({})}
        assert made[gone] not in left and {made[kept], made[foreign]} <= left
    finally:
        for container_id in made.values():
            await runtime.remove(container_id)
        await runtime.remove_volume(f"hydra-{gone}")


@pytest.fixture
def tiny_image(docker_client: docker.DockerClient, remote_engine: RemoteEngine) -> Iterator[str]:
    """A one-file image on the main engine, removed from both engines afterwards."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    tag = f"hydra-copy-test:{uuid.uuid4().hex[:8]}"
    repository, _, version = tag.partition(":")
    docker_client.api.import_image_from_data(data.getvalue(), repository=repository, tag=version)
    try:
        yield tag
    finally:
        remote = engine_client(remote_engine.engine)
        for client, tags in ((docker_client, [tag]), (remote, [tag, f"{tag}-also"])):
            for name in tags:
                with contextlib.suppress(docker.errors.ImageNotFound):
                    client.images.remove(name, force=True)


def test_an_image_is_copied_under_every_tag_and_not_sent_twice(
    docker_client: docker.DockerClient, remote_engine: RemoteEngine, tiny_image: str
) -> None:
    remote = engine_client(remote_engine.engine)
    seen: list[str] = []
    first = copy_image(docker_client, remote, [tiny_image, f"{tiny_image}-also"], progress=seen.append)
    local_id = docker_client.images.get(tiny_image).id
    assert not first.skipped and first.bytes_sent > 0 and first.image_id == local_id
    assert remote.images.get(tiny_image).id == local_id == remote.images.get(f"{tiny_image}-also").id
    assert any(tiny_image in line for line in seen), "progress names the image"
    again = copy_image(docker_client, remote, [tiny_image], progress=seen.append)
    assert again.skipped and again.bytes_sent == 0


def test_the_cli_copies_to_and_doctor_checks_an_engine_named_by_url(
    remote_engine: RemoteEngine, remote_agent_image: str, remote_gateway_image: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("HYDRA_DOCKER_TLS_DIR", str(remote_engine.tls_dir))
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_AGENT_IMAGE", remote_agent_image)
    url = remote_engine.engine.url
    cli_copies_and_doctor_passes(url, "over mutual TLS", monkeypatch)
    engine_client(remote_engine.engine).images.remove(remote_gateway_image)
    try:
        doctor = CliRunner().invoke(app, ["doctor", "--json"])
        missing = {c["name"]: c for c in json.loads(doctor.output)}[f"gateway image {url}"]
        assert not missing["ok"] and "is missing there" in missing["detail"]
        assert "hydra images copy" in missing["fix"]
    finally:
        copy_image(docker.from_env(), engine_client(remote_engine.engine), [remote_gateway_image])


async def test_hydra_gc_sweeps_the_engine_hydra_docker_host_names(
    remote_engine: RemoteEngine, remote_agent_image: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_home = tmp_path / "data"
    monkeypatch.setenv("HYDRA_DATA_HOME", str(data_home))
    monkeypatch.setenv("HYDRA_DOCKER_HOST", remote_engine.engine.url)
    monkeypatch.setenv("HYDRA_DOCKER_TLS_DIR", str(remote_engine.tls_dir))
    runtime = engine_runtime(remote_engine.engine)
    session = session_id()
    await runtime.create(agent_spec(remote_agent_image, session, ["true"], home=home_label(data_home)))
    try:
        swept = await asyncio.to_thread(CliRunner().invoke, app, ["gc"])
        assert swept.exit_code == 0, swept.output
        assert f"removed 1 container(s), 0 volume(s), 0 network(s) on {remote_engine.engine.url}" in swept.output
        assert await runtime.list_containers({LABEL_SESSION: session}) == []
    finally:
        for container in await runtime.list_containers({LABEL_SESSION: session}):
            await runtime.remove(container.id)


async def test_a_bind_mount_or_a_volume_over_a_path_is_refused_on_the_engine_and_nothing_is_made(
    remote_engine: RemoteEngine, remote_agent_image: str
) -> None:
    runtime = engine_runtime(remote_engine.engine)
    session = session_id()
    bind = Mount(type="bind", source="/srv/hydra-run/relay", target="/run/hydra")
    spec = agent_spec(remote_agent_image, session, ["true"]).model_copy(update={"mounts": [bind]})
    with pytest.raises(UnsafeSpecError, match="would be bound from the machine of"):
        await runtime.create(spec)
    opts = {"type": "none", "device": "/", "o": "bind"}
    with pytest.raises(UnsafeSpecError, match="would mount paths"):
        await runtime.create_volume(f"hydra-{session}", {LABEL_SESSION: session}, opts)
    assert await runtime.list_containers({LABEL_SESSION: session}) == []
    assert await runtime.list_volumes({LABEL_SESSION: session}) == []
