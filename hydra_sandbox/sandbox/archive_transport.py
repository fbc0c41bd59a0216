"""The workspace transport for engines that do not share Hydra's disk: the layer goes in as an archive.

:meth:`ArchiveVolumeTransport.attach` packs the agent's view (:func:`~.archive.pack_workspace`: hidden
and denied paths never leave this machine), keeps its manifest as the run's baseline on Hydra's disk,
and streams the archive (through a pipe, nothing on disk) into a fresh labelled volume through a
short-lived transfer container (created, never started, as hardened as an agent: the engine extracts
into its volumes while it is stopped, also under a read-only root). The volume's root takes the
agent's owner and mode because the transfer container mounts it *below* a scratch volume
(``/xfer/ws``): the archive's top entry ``ws`` lands on the mount point itself, which an entry ``.``
would not change.

:meth:`release` reads the agent's tree back the same way and turns it into the overlay form of the
change set in ``ws.upper`` (:func:`~.archive_changes.unpack_changes`, which treats it as hostile), then
removes the volume. Every volume and container is labelled as the session's, so ``hydra gc`` finds a
leftover. Any runtime with :class:`ArchiveRuntime`'s two calls can use it (Docker's archive API here;
``pods/exec`` with ``tar`` for Kubernetes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import BinaryIO, Protocol

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.archive import (
    ROOT_MEMBER,
    Manifest,
    load_manifest,
    manifest_path,
    pack_workspace,
    save_manifest,
)
from hydra_sandbox.sandbox.archive_changes import UnpackResult, bounds_for, stream_limit, unpack_changes
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, ContainerSpec, Mount
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER, StagedWorkspace

log = logging.getLogger(__name__)

TRANSFER_ROOT = "/xfer"


class ArchiveRuntime(ContainerRuntime, Protocol):
    """A runtime that copies tar archives into and out of a (created, not necessarily started) container."""

    async def put_archive(self, container_id: str, path: str, data: BinaryIO) -> None:
        """Extract the tar ``data`` at directory ``path`` of the container (owners and modes kept)."""
        ...

    async def get_archive(self, container_id: str, path: str, dest: BinaryIO, max_bytes: int) -> None:
        """Write a tar of ``path`` (``dir/.``: members ``.`` and ``./…``) to ``dest``; a
        :class:`~hydra_sandbox.errors.WorkspaceError` past ``max_bytes``."""
        ...


def scratch_volume(ws: StagedWorkspace) -> str:
    return f"{ws.volume_name}-xfer"


class ArchiveVolumeTransport:
    """The :class:`~hydra_sandbox.sandbox.workspace.WorkspaceTransport` over archives and a volume."""

    def __init__(self, runtime: ArchiveRuntime, image: str) -> None:
        self._runtime = runtime
        self._image = image
        self._tidying: dict[str, asyncio.Task[None]] = {}  # volume -> its transfer container's removal

    def _transfer_spec(self, ws: StagedWorkspace, mounts: list[Mount]) -> ContainerSpec:
        labels = {**ws.labels, LABEL_ROLE: "transfer"}
        return ContainerSpec(
            image=self._image, argv=["true"], user=f"{ws.agent_uid}:{ws.agent_gid}", labels=labels, mounts=mounts
        )

    async def _exists(self, ws: StagedWorkspace) -> bool:
        return ws.volume_name in {v.name for v in await self._runtime.list_volumes(ws.labels)}  # made with these

    async def attach(self, ws: StagedWorkspace) -> Mount:
        """Pack the session's view into a fresh volume (a volume a crashed run left is read back first).
        Once the archive is in, the transfer container and the scratch volume are removed while the
        agent's container is made (:meth:`release` and :meth:`discard` wait for that first)."""
        if await self._exists(ws) and manifest_path(ws).exists():
            await self.release(ws)
        await self._tidied(ws)
        await self._runtime.remove_volume(ws.volume_name)
        transfer: str | None = None
        try:
            await asyncio.gather(  # both are removed on failure, whichever was made
                self._runtime.create_volume(ws.volume_name, ws.labels),
                self._runtime.create_volume(scratch_volume(ws), ws.labels),
            )
            mounts = [
                Mount(type="volume", source=scratch_volume(ws), target=TRANSFER_ROOT),
                Mount(type="volume", source=ws.volume_name, target=f"{TRANSFER_ROOT}/{ROOT_MEMBER}"),
            ]
            transfer = await self._runtime.create(self._transfer_spec(ws, mounts))
            await self._put_streamed(ws, transfer)
        except BaseException:
            await asyncio.shield(self._tidy(ws, transfer))
            await asyncio.shield(self.discard(ws))
            raise
        self._tidying[ws.volume_name] = asyncio.create_task(self._tidy(ws, transfer))  # off the agent's path
        return Mount(type="volume", source=ws.volume_name, target=WORKSPACE_IN_CONTAINER)

    async def _tidy(self, ws: StagedWorkspace, transfer: str | None) -> None:
        """Remove the transfer container, then the scratch volume it mounted; what is left (the engine
        refused) is labelled as the session's, for ``hydra gc``."""
        try:
            if transfer is not None:
                await self._runtime.remove(transfer)
            await self._runtime.remove_volume(scratch_volume(ws))
        except RuntimeUnavailableError as exc:
            log.warning(
                "session %s: the workspace's transfer container or scratch volume stays: %s", ws.session_id, exc
            )

    async def _tidied(self, ws: StagedWorkspace) -> None:
        """Wait for the removal :meth:`attach` left running, if any."""
        tidying = self._tidying.pop(ws.volume_name, None)
        if tidying is not None:
            await asyncio.shield(tidying)

    async def _put_streamed(self, ws: StagedWorkspace, container_id: str) -> None:
        """Pack in a worker thread straight into the engine's extraction through a pipe (nothing on disk,
        the two overlapped), then keep the manifest. Whichever side fails first, the other is released:
        the read end is closed once the engine is done, so a pack still writing stops (EPIPE)."""
        read_fd, write_fd = os.pipe()
        reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")

        def pack() -> Manifest:
            with writer:
                return pack_workspace(ws, writer)

        packing = asyncio.get_running_loop().run_in_executor(None, pack)  # submitted now, not at the next await
        put_error: BaseException | None = None
        try:
            await self._runtime.put_archive(container_id, TRANSFER_ROOT, reader)
        except BaseException as exc:
            put_error = exc
        finally:
            reader.close()
        try:
            manifest = await packing
        except Exception:  # the pack's EPIPE after the engine failed: the engine's error is the reason
            if put_error is not None:
                raise put_error from None
            raise
        if put_error is not None:
            raise put_error
        await asyncio.to_thread(save_manifest, ws, manifest)

    async def _through(self, ws: StagedWorkspace, mounts: list[Mount], call: Callable[[str], Awaitable[None]]) -> None:
        container_id = await self._runtime.create(self._transfer_spec(ws, mounts))
        try:
            await call(container_id)
        finally:
            await asyncio.shield(self._runtime.remove(container_id))

    async def release(self, ws: StagedWorkspace) -> None:
        """Bring the agent's changes home into ``ws.upper``, then remove the volume (also when the
        archive was refused: the run then fails with the reason, and nothing of it was applied)."""
        await self._tidied(ws)
        if not await self._exists(ws):
            return
        try:
            manifest = await asyncio.to_thread(load_manifest, ws)
            archive = ws.session_dir / "transfer-out.tar"
            limit = stream_limit(bounds_for(ws, manifest))
            mounts = [Mount(type="volume", source=ws.volume_name, target=WORKSPACE_IN_CONTAINER, read_only=True)]
            try:
                with archive.open("w+b") as fh:
                    path = f"{WORKSPACE_IN_CONTAINER}/."
                    await self._through(ws, mounts, lambda cid: self._runtime.get_archive(cid, path, fh, limit))
                    fh.seek(0)
                    await asyncio.to_thread(_unpack, fh, ws)
            finally:
                archive.unlink(missing_ok=True)
        finally:
            await asyncio.shield(self._runtime.remove_volume(ws.volume_name))

    async def discard(self, ws: StagedWorkspace) -> None:
        await self._tidied(ws)
        await self._runtime.remove_volume(ws.volume_name)
        await self._runtime.remove_volume(scratch_volume(ws))
        with contextlib.suppress(FileNotFoundError):
            manifest_path(ws).unlink()


def _unpack(fh: BinaryIO, ws: StagedWorkspace) -> UnpackResult:
    result = unpack_changes(fh, load_manifest(ws), ws)
    manifest_path(ws).unlink(missing_ok=True)  # the baseline is spent: the next run packs a new one
    return result
