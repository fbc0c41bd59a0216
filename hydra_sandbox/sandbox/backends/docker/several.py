"""Agents placed across the Docker engines ``HYDRA_DOCKER_HOST`` lists: one orchestrator per engine
(each with the parts :func:`~hydra_sandbox.sandbox.backends.docker.docker_backend` picks for that engine's
runtime) under one :class:`~hydra_sandbox.sandbox.engine_set.EngineSet`, and the name each engine shows as
a session's ``host``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hydra_sandbox.docker_hosts import EngineConfig
from hydra_sandbox.sandbox.engine_set import EngineSet
from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator
from hydra_sandbox.sandbox.workspace import LayerStore

if TYPE_CHECKING:
    from hydra_sandbox.agent_endpoint import AgentEndpoint
    from hydra_sandbox.masking import SecretMasker
    from hydra_sandbox.sandbox.backends.docker.workspace import VolumeDriverRuntime
    from hydra_sandbox.settings import HydraSettings


def engine_host(engine: EngineConfig) -> str:
    """How sessions on ``engine`` show where they run: its URL without a user name (``ssh://`` may carry
    one; a password is never taken, but the name is not the reader's business either)."""
    if engine.scheme != "ssh":
        return engine.url
    host = f"[{engine.host}]" if ":" in engine.host else engine.host
    return f"ssh://{host}" + (f":{engine.port}" if engine.port else "")


def engine_set(
    settings: HydraSettings,
    masker: SecretMasker,
    agent_endpoint: AgentEndpoint | None,
    engines: Sequence[tuple[EngineConfig, VolumeDriverRuntime]],
) -> EngineSet:
    """The sandbox over ``engines`` (each with its runtime), in the order listed; they share the masker,
    the agent endpoint, the store of workspace layers (all on this machine) and the model tokens each
    session used (its budget holds whichever engine runs it)."""
    from hydra_sandbox.sandbox.backends.docker import docker_backend

    layers = LayerStore(settings.sessions_dir)
    model_tokens: dict[str, int] = {}
    sandboxes = [
        SandboxOrchestrator(
            settings,
            masker,
            dataclasses.replace(docker_backend(settings, runtime), host=engine_host(engine)),
            agent_endpoint,
            layers=layers,
            model_tokens=model_tokens,
        )
        for engine, runtime in engines
    ]
    return EngineSet(sandboxes, settings.engine_max_agents or settings.max_concurrent_agents)
