"""An AgentManager over the real Docker sandbox the settings choose, for integration tests and benchmarks
that drive runs without the MCP server (restart tests make a second one over the same journal)."""

from __future__ import annotations

from hydra_sandbox.journal import Journal
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox.backends.docker import docker_sandbox
from hydra_sandbox.settings import HydraSettings


def manager_for(settings: HydraSettings, max_concurrent: int | None = None) -> AgentManager:
    """A manager on ``settings`` (its own masker and journal connection); ``max_concurrent`` defaults to
    the ``max_concurrent_agents`` setting."""
    masker = SecretMasker()
    return AgentManager(
        sandbox=docker_sandbox(settings, masker),
        recorder=Recorder(Journal(settings.journal_path), masker),
        profiles=ProfileCatalog(settings.profile_dirs),
        policies=PolicyCatalog(settings.policy_dirs),
        default_model="test-model",
        max_concurrent=max_concurrent or settings.max_concurrent_agents,
    )
