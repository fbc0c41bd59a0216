"""Garbage collection: remove every container, volume and network with Hydra's labels whose session is
not one Hydra still needs (active, or waiting for its diff to be applied)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from hydra_sandbox.runtime import LABEL_HOME, LABEL_SESSION, ContainerRuntime


class GcReport(BaseModel):
    containers: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return len(self.containers) + len(self.volumes) + len(self.networks)


async def collect_garbage(
    runtime: ContainerRuntime, keep_sessions: set[str], *, home: str, dry_run: bool = False
) -> GcReport:
    """Remove what belongs to this Hydra (``home``: :func:`~hydra_sandbox.runtime.home_label` of its data
    home) and to no session in ``keep_sessions``. Other instances' objects are never touched."""
    report = GcReport(dry_run=dry_run)
    mine = {LABEL_HOME: home}
    for container in await runtime.list_containers(mine):
        session = container.labels.get(LABEL_SESSION)
        if session is not None and session not in keep_sessions:
            report.containers.append(container.name)
            if not dry_run:
                await runtime.remove(container.id)
    for volume in await runtime.list_volumes(mine):
        session = volume.labels.get(LABEL_SESSION)
        if session is not None and session not in keep_sessions:
            report.volumes.append(volume.name)
            if not dry_run:
                await runtime.remove_volume(volume.name)
    for network in await runtime.list_networks(mine):
        session = network.labels.get(LABEL_SESSION)
        if session is not None and session not in keep_sessions:
            report.networks.append(network.name)
            if not dry_run:
                await runtime.remove_network(network.name)
    return report
