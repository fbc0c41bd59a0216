"""The local Docker backend's workspace transport: the session's layer as an overlay volume.

A Docker ``local`` volume with ``type=overlay`` whose lower layers are the parent sessions' upper layers
(nearest first) and the working directory, and whose upper layer is the session's: the daemon mounts it
at container start, so staging costs O(1) in the size of the directory, and the agent's writes land
directly in the layer on Hydra's disk (nothing to bring back).
"""

from __future__ import annotations

from typing import Protocol

from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, Mount
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER, StagedWorkspace


class VolumeDriverRuntime(ContainerRuntime, Protocol):
    """A Docker-shaped runtime: its volumes take a volume driver's options (``local`` overlay here)."""

    async def create_volume(
        self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None
    ) -> str: ...


def overlay_driver_opts(ws: StagedWorkspace) -> dict[str, str]:
    """The ``local`` volume driver's options that mount ``ws`` as an overlay."""
    lower = ":".join(str(p) for p in ws.lowers)
    return {"type": "overlay", "device": "overlay", "o": f"lowerdir={lower},upperdir={ws.upper},workdir={ws.work}"}


class OverlayVolumeTransport:
    """The :class:`~hydra_sandbox.sandbox.workspace.WorkspaceTransport` of the local Docker backend."""

    def __init__(self, volumes: VolumeDriverRuntime) -> None:
        self._volumes = volumes

    async def attach(self, ws: StagedWorkspace) -> Mount:
        """(Re-)create the overlay volume, e.g. for a resumed run; its content is the upper layer."""
        existing = {v.name for v in await self._volumes.list_volumes({LABEL_ROLE: "workspace"})}
        if ws.volume_name not in existing:
            if not ws.work.exists():
                ws.work.mkdir()
            await self._volumes.create_volume(ws.volume_name, ws.labels, overlay_driver_opts(ws))
        return Mount(type="volume", source=ws.volume_name, target=WORKSPACE_IN_CONTAINER)

    async def release(self, ws: StagedWorkspace) -> None:
        """Remove the volume; the upper layer (the session's changes) already is on this disk."""
        await self._volumes.remove_volume(ws.volume_name)

    async def discard(self, ws: StagedWorkspace) -> None:
        await self._volumes.remove_volume(ws.volume_name)
