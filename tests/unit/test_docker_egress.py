"""The Docker backend's egress placement without a container: which sockets it serves, what the agent
container is given, and what stays when the server shuts down mid-run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.egress import GatewaySecrets, plan_egress

MODEL = "http://127.0.0.1:9/v1"


async def test_no_network_and_no_delegation_gives_the_agent_nothing(run_dir: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="none"), MODEL, "s-000000000001")
    async with HostSocketEgress(lambda: run_dir).serve(plan) as active:
        assert active.mounts == [] and active.env == {} and active.entrypoint == []
        assert active.network_mode == "none" and not (run_dir / "s-000000000001").exists()


async def test_model_only_is_served_by_the_gateway_through_one_read_only_socket_directory(run_dir: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="model-only"), MODEL, "s-000000000001")
    async with HostSocketEgress(lambda: run_dir).serve(plan) as active:
        (mount,) = active.mounts
        assert mount.source == str(run_dir / "s-000000000001") and mount.target == "/run/hydra" and mount.read_only
        assert (run_dir / "s-000000000001" / "egress.sock").is_socket()
        assert active.model_base_url == "http://127.0.0.1:18080/v1" and "HTTPS_PROXY" not in active.env
        assert active.network_mode == "none" and active.entrypoint == ["hydra-agent-entry"]
    assert not (run_dir / "s-000000000001").exists()


async def test_an_allowlist_proxies_every_client_and_exempts_only_hydras_own_relays(run_dir: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="allowlist", allow_domains=["pkg.example"]), MODEL, "s-000000000001")
    mcp = run_dir / "endpoint.sock"
    secrets = GatewaySecrets(mcp_token=SecretStr("agent-token-xyz"))
    async with HostSocketEgress(lambda: run_dir).serve(plan, mcp, secrets=secrets) as active:
        assert active.env["HTTPS_PROXY"] == active.env["http_proxy"] == "http://127.0.0.1:18080"
        assert "agent-token-xyz" not in str(active.env) and "HYDRA_AGENT_TOKEN" not in active.env
        assert active.env["NO_PROXY"] == "127.0.0.1,localhost"
        assert active.env["HYDRA_MCP_SOCKET"] == "/run/hydra/hydra-mcp.sock"
        assert (run_dir / "s-000000000001" / "hydra-mcp.sock").is_socket()


async def test_a_server_shutdown_mid_run_leaves_the_socket_directory_for_the_running_agent(run_dir: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="model-only"), MODEL, "s-000000000001")
    served = asyncio.Event()

    async def run() -> None:
        async with HostSocketEgress(lambda: run_dir).serve(plan):
            served.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await served.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (run_dir / "s-000000000001").is_dir()
