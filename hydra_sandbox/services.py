"""Builds and tears down everything a running Hydra needs, once, from the settings.

The MCP server's lifespan calls :func:`open_services`; tests pass their own pieces (a fake sandbox,
an in-memory store) through the same function so the server code is the same in both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hydra_sandbox.agent_endpoint import AgentEndpoint, AgentTokens, endpoint_socket
from hydra_sandbox.indexer import Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.masking import MaskingRule, SecretMasker, load_rules
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.private_data import private_dir
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox import Sandbox
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import ContextStore


@dataclass
class Services:
    settings: HydraSettings
    journal: Journal
    masker: SecretMasker
    store: ContextStore
    indexer: Indexer
    sandbox: Sandbox
    manager: AgentManager
    profiles: ProfileCatalog
    policies: PolicyCatalog
    agent_endpoint: AgentEndpoint | None = None


def known_secrets(settings: HydraSettings) -> list[str]:
    values = [s.get_secret_value() for s in settings.secrets]
    if settings.model_api_key is not None:
        values.append(settings.model_api_key.get_secret_value())
    return [v for v in values if v]


def _default_store(settings: HydraSettings) -> ContextStore:
    """Embedded Chroma in a process of its own (its binding holds the interpreter lock for each whole
    call: in the server's process it stalled every tool); a Chroma server through its HTTP client."""
    if settings.chroma_url:
        from hydra_sandbox.chroma_store import ChromaStore

        return ChromaStore.from_settings(settings)
    from hydra_sandbox.index_process import IndexProcess

    return IndexProcess(settings)


def _default_sandbox(settings: HydraSettings, masker: SecretMasker, endpoint: AgentEndpoint | None) -> Sandbox:
    from hydra_sandbox.sandbox.backends import open_backend

    return open_backend(settings, masker, endpoint)


def agent_endpoint_for(settings: HydraSettings) -> AgentEndpoint | None:
    """The endpoint agents may call Hydra through (not yet serving: the MCP server starts it)."""
    if not settings.agent_mcp:
        return None
    from hydra_sandbox.sandbox.egress import runtime_dir

    return AgentEndpoint(
        endpoint_socket(runtime_dir(settings.runtime_dir), settings.data_home), AgentTokens(settings.agent_tokens_dir)
    )


def masking_rules(settings: HydraSettings) -> tuple[MaskingRule, ...]:
    """The built-in masking rules and the operator's (``HYDRA_MASKING_RULES_DIR``)."""
    return load_rules([settings.masking_rules_dir] if settings.masking_rules_dir else [])


@contextlib.asynccontextmanager
async def open_services(
    settings: HydraSettings,
    *,
    sandbox: Sandbox | None = None,
    store: ContextStore | None = None,
) -> AsyncIterator[Services]:
    private_dir(settings.data_home)
    private_dir(settings.sessions_dir)
    journal = Journal(settings.journal_path)
    masker = SecretMasker(known_secrets(settings), rules=masking_rules(settings))
    store = store if store is not None else _default_store(settings)
    indexer = Indexer(journal, store)
    endpoint = agent_endpoint_for(settings) if sandbox is None else None
    sandbox = sandbox if sandbox is not None else _default_sandbox(settings, masker, endpoint)
    profiles = ProfileCatalog(settings.profile_dirs)
    policies = PolicyCatalog(settings.policy_dirs)
    manager = AgentManager(
        sandbox=sandbox,
        recorder=Recorder(journal, masker, on_recorded=indexer.notify),
        profiles=profiles,
        policies=policies,
        default_model=settings.model,
        max_concurrent=settings.max_concurrent_agents,
        known_secrets=known_secrets(settings),
    )
    indexer.start()
    try:
        await manager.start()
        yield Services(settings, journal, masker, store, indexer, sandbox, manager, profiles, policies, endpoint)
    finally:
        await manager.close()
        indexer.stop()
        await sandbox.close()
        close_store = getattr(store, "close", None)
        if callable(close_store):
            close_store()
        journal.close()
