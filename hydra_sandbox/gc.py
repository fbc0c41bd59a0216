"""Garbage collection: remove every container, volume and network with Hydra's labels whose session is
not one Hydra still needs (active, or waiting for its diff to be applied)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_SESSION, ContainerInfo, NetworkInfo, VolumeInfo

Labelled = ContainerInfo | VolumeInfo | NetworkInfo
Remove = Callable[[Any], Awaitable[None]]


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
    """Remove what belongs to this Hydra (``home``: :func:`~hydra_sandbox.sandbox.spec.home_label` of its data
    home) and to no session in ``keep_sessions``. Other instances' objects are never touched."""
    report = GcReport(dry_run=dry_run)
    mine = {LABEL_HOME: home}

    async def sweep(found: Sequence[Labelled], removed: list[str], remove: Remove) -> None:
        for thing in found:
            session = thing.labels.get(LABEL_SESSION)
            if session is not None and session not in keep_sessions:
                removed.append(thing.name)
                if not dry_run:
                    await remove(thing)

    await sweep(await runtime.list_containers(mine), report.containers, lambda c: runtime.remove(c.id))
    await sweep(await runtime.list_volumes(mine), report.volumes, lambda v: runtime.remove_volume(v.name))
    await sweep(await runtime.list_networks(mine), report.networks, lambda n: runtime.remove_network(n.name))
    return report
