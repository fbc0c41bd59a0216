"""The ArchiveRuntime calls (put_archive / get_archive), over the in-memory fake and the real Docker runtime
(marked ``docker``), as the archive transport uses them: into a created, never started, read-only-root
container; the top entry put below a nested mount gives the volume's root its owner and mode."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import AsyncIterator

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.sandbox.archive_transport import ArchiveRuntime
from hydra_sandbox.sandbox.fake import FakeRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec, Mount

FAKE_IMAGE = "hydra-agent:fake"


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker)])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ArchiveRuntime, str]]:
    if request.param == "fake":
        yield FakeRuntime(images=[FAKE_IMAGE]), FAKE_IMAGE
        return
    from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime

    yield DockerRuntime(), request.getfixturevalue("agent_image")


def entry(name: str, kind: bytes, mode: int, data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.size = kind, mode, 1234, 1234, len(data)
    return info, data


def archive(*entries: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    out.seek(0)
    return out


async def test_an_archive_put_below_a_nested_mount_comes_back_with_the_roots_owner_and_mode(
    subject: tuple[ArchiveRuntime, str],
) -> None:
    runtime, image = subject
    session = f"contract-{uuid.uuid4().hex[:10]}"
    labels = {LABEL_SESSION: session, LABEL_ROLE: "transfer", "hydra.test": "1"}
    volume, scratch = f"hydra-{session}", f"hydra-{session}-x"
    await runtime.create_volume(volume, labels)
    await runtime.create_volume(scratch, labels)
    mounts = [
        Mount(type="volume", source=scratch, target="/xfer"),
        Mount(type="volume", source=volume, target="/xfer/ws"),
    ]
    transfer = ContainerSpec(image=image, argv=["true"], user="1234:1234", labels=labels, mounts=mounts)
    container_id = await runtime.create(transfer)
    try:
        with pytest.raises(RuntimeUnavailableError):  # the root filesystem is read-only
            await runtime.put_archive(container_id, "/", archive(entry("x", tarfile.REGTYPE, 0o644, b"x")))
        tree = archive(
            entry("ws", tarfile.DIRTYPE, 0o750),
            entry("ws/d", tarfile.DIRTYPE, 0o700),
            entry("ws/d/f.txt", tarfile.REGTYPE, 0o640, b"hello\n"),
        )
        await runtime.put_archive(container_id, "/xfer", tree)
        back = io.BytesIO()
        await runtime.get_archive(container_id, "/xfer/ws/.", back, 1 << 20)
        back.seek(0)
        with tarfile.open(fileobj=back) as tar:
            found = {m.name: (m.type, m.mode & 0o7777, m.uid) for m in tar.getmembers()}
            content = tar.extractfile("./d/f.txt").read()  # type: ignore[union-attr]
        assert found == {
            ".": (tarfile.DIRTYPE, 0o750, 1234),
            "./d": (tarfile.DIRTYPE, 0o700, 1234),
            "./d/f.txt": (tarfile.REGTYPE, 0o640, 1234),
        }
        assert content == b"hello\n"
        with pytest.raises(WorkspaceError, match="over 100 bytes"):
            await runtime.get_archive(container_id, "/xfer/ws/.", io.BytesIO(), 100)
    finally:
        await runtime.remove(container_id)
        await runtime.remove_volume(volume)
        await runtime.remove_volume(scratch)
