"""A :class:`~hydra_sandbox.sandbox.protocol.Sandbox` over several engines: one orchestrator per engine,
and the routing between them.

- ``run`` places a new session with :func:`~hydra_sandbox.sandbox.placement.choose_engine` over the
  engines' loads (agent containers created or running, by any Hydra, plus the sessions this set placed
  whose container does not exist yet); a resume goes back to the engine of its last run while it has a
  free place (its Codex home, the thread to continue, is there). When every engine is full the run waits
  (its session stays ``starting``, its worker held, so later sessions stay queued behind it) until a place
  frees or it is cancelled; when no engine answers it fails with each engine's error.
- ``follow`` finds the engine whose agent container carries the session's label, the recorded one first.
- ``diff`` reads the change set on this machine (the overlay's upper layer, or what the archive transport
  brought back at the end of the run), so any engine's orchestrator would do; ``apply`` and ``discard``
  also remove the session's volumes, so they go to the engine that holds them.
- ``live_sessions`` is the union, ``status`` reports each engine, ``close`` closes all.

An engine that does not answer never breaks the others: it takes no new sessions, its sessions are not
live, and ``status`` says which and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hydra_sandbox.errors import ConfigError, HydraError
from hydra_sandbox.sandbox.placement import EngineLoad, choose_engine, engine_loads
from hydra_sandbox.sandbox.protocol import ContainerObserver, EventSink, PlacementListener, RunRequest, RunResult
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION

if TYPE_CHECKING:
    from hydra_sandbox.applying import ApplyResult
    from hydra_sandbox.diffing import DiffPreview
    from hydra_sandbox.policy import Policy
    from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator

log = logging.getLogger(__name__)

RECHECK_S = 2.0
"""How often a run waiting for a free place asks the engines again (another Hydra's agents end unseen)."""


def describe_loads(loads: Sequence[EngineLoad]) -> str:
    """``a: 4/4 agents; b: unreachable (why)``: what the engines said, for a reason or a log line."""
    return "; ".join(
        f"{load.engine}: {load.running}/{load.limit} agents"
        if load.reachable
        else f"{load.engine}: unreachable ({load.error})"
        for load in loads
    )


class EngineSet:
    """The sandbox of several engines; ``engines`` maps each engine's shown name (its ``host``) to its
    orchestrator, in the order listed (the first wins a tie). ``limit``: running agents per engine."""

    def __init__(self, engines: Sequence[SandboxOrchestrator], limit: int, *, recheck_s: float = RECHECK_S) -> None:
        if not engines:
            raise ConfigError("an engine set needs at least one engine", hint="list engines in HYDRA_DOCKER_HOST")
        if limit < 1:
            raise ConfigError(
                f"HYDRA_ENGINE_MAX_AGENTS: {limit} running agents per engine would place none",
                hint="set a number from 1 to 256",
            )
        self.engines = {sandbox.backend.host: sandbox for sandbox in engines}
        if len(self.engines) != len(engines):
            raise ConfigError("two engines of the set show the same host", hint="list each engine once")
        self.limit = limit
        self.recheck_s = recheck_s
        self._where: dict[str, str] = {}
        """Session -> the engine its agent was placed on or found on (this server's life)."""
        self._pending: dict[str, set[str]] = {name: set() for name in self.engines}
        """Engine -> sessions placed there whose container has not started yet (not counted by the engine)."""
        self._waiting: set[str] = set()
        """Sessions whose run waits for a free place (shown by :meth:`status`)."""
        self._place_lock = asyncio.Lock()
        self._freed = asyncio.Event()
        self._listeners: list[PlacementListener] = []
        for sandbox in engines:
            sandbox.add_placement_listener(self._placed)

    # -- who is where ------------------------------------------------------------------------

    def add_placement_listener(self, listener: PlacementListener) -> None:
        self._listeners.append(listener)

    def add_observer(self, observer: ContainerObserver) -> None:
        for sandbox in self.engines.values():
            sandbox.add_observer(observer)

    def _placed(self, session_id: str, host: str) -> None:
        self._where[session_id] = host
        for pending in self._pending.values():
            pending.discard(session_id)
        for listener in self._listeners:
            listener(session_id, host)

    async def loads(self) -> list[EngineLoad]:
        """Every engine's load now, counting the sessions placed there that have no container yet."""
        found = await engine_loads({name: s.runtime for name, s in self.engines.items()}, self.limit)
        return [
            load.model_copy(update={"running": load.running + len(self._pending[load.engine])})
            if load.reachable
            else load
            for load in found
        ]

    def _choose(self, loads: Sequence[EngineLoad], preferred: str | None) -> str | None:
        if preferred is not None and any(load.engine == preferred and load.free > 0 for load in loads):
            return preferred
        return choose_engine(loads)

    async def _engine_of(self, session_id: str) -> SandboxOrchestrator:
        """The engine that holds the session's containers or volumes (by label), else the first one."""
        name = self._where.get(session_id)
        if name is not None:
            return self.engines[name]
        labels = {LABEL_SESSION: session_id}
        for name, sandbox in self.engines.items():
            with contextlib.suppress(HydraError):
                if await sandbox.runtime.list_volumes(labels) or await sandbox.runtime.list_containers(labels):
                    self._where[session_id] = name
                    return sandbox
        return next(iter(self.engines.values()))

    # -- running -----------------------------------------------------------------------------

    async def _place(self, request: RunRequest, cancel: asyncio.Event) -> str | RunResult:
        """An engine with a free place for ``request`` (now reserved), or the result of a run that never
        got one: failed when no engine answers, cancelled when cancelled while it waited."""
        try:
            return await self._place_or_wait(request, cancel)
        finally:
            self._waiting.discard(request.session_id)

    async def _place_or_wait(self, request: RunRequest, cancel: asyncio.Event) -> str | RunResult:
        said = False
        while True:
            freed = self._freed
            async with self._place_lock:
                loads = await self.loads()
                name = self._choose(loads, request.host)
                if name is not None:
                    self._pending[name].add(request.session_id)
                    return name
            if not any(load.reachable for load in loads):
                return RunResult(status="failed", reason=f"no Docker engine answers: {describe_loads(loads)}")
            if not said:
                log.info("session %s waits for a free place: %s", request.session_id, describe_loads(loads))
                self._waiting.add(request.session_id)
                said = True
            waits = [asyncio.ensure_future(cancel.wait()), asyncio.ensure_future(freed.wait())]
            try:
                await asyncio.wait(waits, timeout=self.recheck_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
            if cancel.is_set():
                return RunResult(status="cancelled", reason="cancelled while it waited for a free place on an engine")

    def _release(self, name: str, session_id: str) -> None:
        """A run placed on ``name`` ended: its reservation goes, and runs waiting for a place look again."""
        self._pending[name].discard(session_id)
        self._freed.set()
        self._freed = asyncio.Event()

    async def run(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        placed = await self._place(request, cancel)
        if isinstance(placed, RunResult):
            return placed
        try:
            return await self.engines[placed].run(request, sink, cancel)
        finally:
            self._release(placed, request.session_id)

    async def unanswered_hosts(self) -> set[str]:
        loads = await self.loads()
        if not any(load.reachable for load in loads):
            return set()  # nothing answers: the sessions are failed, as with one engine that is down
        return {load.engine for load in loads if not load.reachable}

    async def _until_answers(self, name: str, cancel: asyncio.Event) -> bool:
        """Wait until engine ``name`` answers (True), or until cancelled (False)."""
        said = False
        while True:
            try:
                await self.engines[name].runtime.list_containers({LABEL_ROLE: "agent"})
                return True
            except HydraError as exc:
                if not said:
                    log.warning("engine %s does not answer (%s); waiting for it to re-attach", name, exc)
                    said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), timeout=self.recheck_s)
            if cancel.is_set():
                return False

    async def follow(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event, skip: int) -> RunResult:
        """Re-attach on the engine whose running agent container carries the session's label (the
        recorded engine is asked first, and waited for while it does not answer); another engine that
        does not answer is skipped and named."""
        if request.host in self.engines and not await self._until_answers(request.host, cancel):
            return RunResult(status="cancelled", reason=f"cancelled while its engine {request.host} did not answer")
        order = sorted(self.engines, key=lambda name: name != request.host)
        labels = {LABEL_SESSION: request.session_id, LABEL_ROLE: "agent"}
        unanswered: list[str] = []
        for name in order:
            try:
                containers = await self.engines[name].runtime.list_containers(labels)
            except HydraError as exc:
                unanswered.append(f"{name} ({exc})")
                continue
            if any(c.status == "running" for c in containers):
                try:
                    return await self.engines[name].follow(request, sink, cancel, skip)
                finally:
                    self._release(name, request.session_id)
        reason = "its container vanished while the server was down"
        if unanswered:
            reason += f" (or is on an engine that does not answer: {', '.join(unanswered)})"
        return RunResult(status="failed", reason=reason)

    # -- reviewing ---------------------------------------------------------------------------

    async def diff(self, session_id: str, policy: Policy) -> DiffPreview:
        name = self._where.get(session_id)
        sandbox = self.engines[name] if name is not None else next(iter(self.engines.values()))
        return await sandbox.diff(session_id, policy)

    async def apply(
        self,
        session_id: str,
        policy: Policy,
        *,
        confirm: bool,
        digest: str | None = None,
        acknowledge_masked: bool = False,
    ) -> ApplyResult:
        sandbox = await self._engine_of(session_id)
        return await sandbox.apply(
            session_id, policy, confirm=confirm, digest=digest, acknowledge_masked=acknowledge_masked
        )

    async def discard(self, session_id: str) -> None:
        await (await self._engine_of(session_id)).discard(session_id)

    # -- health ------------------------------------------------------------------------------

    async def live_sessions(self) -> set[str]:
        found = await asyncio.gather(*(sandbox.live_sessions() for sandbox in self.engines.values()))
        return set().union(*found)

    async def status(self) -> dict[str, object]:
        """Each engine's health and load; ``docker`` is ``ok`` only when every engine answers."""
        names = list(self.engines)
        loads = {load.engine: load for load in await self.loads()}
        each = await asyncio.gather(*(self.engines[name].status() for name in names))
        engines: dict[str, object] = {}
        for name, status in zip(names, each, strict=True):
            load = loads[name]
            engines[name] = status | {
                "agents": load.running,
                "limit": load.limit,
                "free": load.free,
                "reachable": load.reachable,
                **({"error": load.error} if load.error else {}),
            }
        down = [name for name in names if not loads[name].reachable]
        return {
            "backend": "docker",
            "docker": "ok" if not down else f"unavailable: {', '.join(down)} (the others take the sessions)",
            "placement": {
                "engines": len(names),
                "max_agents_per_engine": self.limit,
                "waiting_for_a_place": sorted(self._waiting),
            },
            "engines": engines,
        }

    async def close(self) -> None:
        await asyncio.gather(*(sandbox.close() for sandbox in self.engines.values()))
