"""The agent container of one run, backend-neutral: Codex's argv and environment, the session's
labels and mounts, the policy's limits, as a hardened :class:`~hydra_sandbox.sandbox.spec.ContainerSpec`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from hydra_sandbox import __version__
from hydra_sandbox.agent_endpoint import MCP_PORT
from hydra_sandbox.codex import build_invocation
from hydra_sandbox.sandbox.egress import ActiveEgress
from hydra_sandbox.sandbox.protocol import RunRequest
from hydra_sandbox.sandbox.spec import (
    LABEL_HOME,
    LABEL_PARENT,
    LABEL_PROFILE,
    LABEL_ROLE,
    LABEL_SESSION,
    LABEL_VERSION,
    ContainerSpec,
    Mount,
)

CODEX_HOME = "/codex-home"
AGENT_ENV = {
    "CODEX_HOME": CODEX_HOME,
    "HOME": "/home/agent",
    # keep build caches out of the session's diff
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTEST_ADDOPTS": "-p no:cacheprovider",
}


def session_labels(request: RunRequest, role: str, home: str) -> dict[str, str]:
    """The labels of every object a run creates (``home``: :func:`~hydra_sandbox.sandbox.spec.home_label`)."""
    return {
        LABEL_HOME: home,
        LABEL_SESSION: request.session_id,
        LABEL_PROFILE: request.profile_id,
        LABEL_PARENT: request.parent_session_id or "",
        LABEL_VERSION: __version__,
        LABEL_ROLE: role,
    }


def codex_home_volume(session_id: str) -> str:
    """The per-session volume holding Codex's state, so a resumed run continues its thread."""
    return f"hydra-codex-{session_id}"


class AgentContainer(BaseModel):
    """What the orchestrator knows about a run's container before it creates it."""

    model_config = ConfigDict(frozen=True)

    image: str
    workspace: Mount
    agent_uid: int
    agent_gid: int
    labels: dict[str, str]
    egress: ActiveEgress
    delegate: bool = False
    runtime: str | None = None


def agent_spec(request: RunRequest, agent: AgentContainer) -> ContainerSpec:
    """The hardened spec of the container that runs Codex for ``request``. It holds no secret: the
    model key and the agent's Hydra token are added by the gateways outside (``sandbox/gateways.py``),
    so Codex's provider needs no key and its MCP entry no bearer token."""
    mcp_servers = None
    if agent.delegate:
        mcp_servers = {"hydra": {"url": f"http://127.0.0.1:{MCP_PORT}/mcp"}}
    invocation = build_invocation(
        request.prompt,
        model=request.model,
        resume_thread_id=request.resume_thread_id,
        workdir=agent.workspace.target,
        base_url=agent.egress.model_base_url,
        codex_home=CODEX_HOME,
        mcp_servers=mcp_servers,
    )
    env = {**invocation.env, **agent.egress.env, **AGENT_ENV}
    return ContainerSpec(
        image=agent.image,
        argv=[*agent.egress.entrypoint, *invocation.argv],
        env=env,
        workdir=agent.workspace.target,
        user=f"{agent.agent_uid}:{agent.agent_gid}",
        labels=agent.labels,
        mounts=[
            agent.workspace,
            Mount(type="volume", source=codex_home_volume(request.session_id), target=CODEX_HOME),
            *agent.egress.mounts,
        ],
        network_mode=agent.egress.network_mode,
        limits=request.policy.resources,
        name=f"hydra-{request.session_id}-{request.run_index}",
        runtime=agent.runtime,
    )
