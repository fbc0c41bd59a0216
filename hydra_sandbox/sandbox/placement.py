"""Placement across several engines: which engine a new agent goes to.

Each engine has a limit of running agents (``HYDRA_ENGINE_MAX_AGENTS``, see docs/remote-docker.md); its
load is the number of agent containers on it that are created or running, by any Hydra (a second
Hydra's agents use the same machine). A new agent goes to the engine with the most free places, the
first listed on a tie, and waits when every engine is full (see :mod:`.engine_set`).
:func:`choose_engine` is pure; :func:`engine_loads` counts through each engine's
:class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.errors import HydraError
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE

BUSY = frozenset({"created", "running", "restarting", "paused"})


class EngineLoad(BaseModel):
    """One engine's agents now; ``reachable`` is false when it could not be asked (it then takes none),
    and ``error`` says why."""

    model_config = ConfigDict(frozen=True)

    engine: str
    running: int = Field(ge=0)
    limit: int = Field(ge=0)
    reachable: bool = True
    error: str | None = None

    @property
    def free(self) -> int:
        return max(self.limit - self.running, 0) if self.reachable else 0


def choose_engine(loads: Sequence[EngineLoad]) -> str | None:
    """The engine with the most free places (the first listed among equals), or ``None`` when all are full
    or unreachable."""
    best: EngineLoad | None = None
    for load in loads:
        if load.free > 0 and (best is None or load.free > best.free):
            best = load
    return best.engine if best is not None else None


async def engine_loads(runtimes: Mapping[str, ContainerRuntime], limit: int) -> list[EngineLoad]:
    """The load of every engine, asked at once; one that fails to answer counts as unreachable."""

    async def ask(engine: str, runtime: ContainerRuntime) -> EngineLoad:
        try:
            found = await runtime.list_containers({LABEL_ROLE: "agent"})
        except HydraError as exc:
            return EngineLoad(engine=engine, running=0, limit=limit, reachable=False, error=str(exc))
        return EngineLoad(engine=engine, running=sum(c.status in BUSY for c in found), limit=limit)

    return list(await asyncio.gather(*(ask(engine, runtime) for engine, runtime in runtimes.items())))
