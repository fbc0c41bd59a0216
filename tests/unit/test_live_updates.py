"""Live updates with the official ``mcp`` client, on both protocol generations and both transports.

2025-era (``mode="legacy"``: the handshake the SDK's ``ClientSession`` negotiates, 2025-11-25):
``resources/subscribe`` and ``notifications/resources/updated``. 2026-07-28: ``subscriptions/listen``.
Every "does not get" is proved by order, never by waiting: the unrelated session ends first, so its
event, had it been sent, would have arrived before the one awaited.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent, Subscription
from mcp.shared.exceptions import MCPError

from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.mcp.auth import HydraTokenVerifier
from hydra_sandbox.mcp.live import session_uri, tree_uri
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.fake_sandbox import FakeSandbox
from tests.hydra_server import hydra_servers
from tests.live_kit import Inbox, in_memory, over_socket, serving, spawn, stop, tool
from tests.mcp_calls import until

MODERN = "2026-07-28"
OPERATOR_TOKEN = "operator-token-for-live-updates"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    return load_settings()


@pytest.fixture
def sandbox() -> FakeSandbox:
    held = FakeSandbox()
    held.gate = asyncio.Event()  # runs stay running until a test ends them
    return held


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    return path


async def running(sandbox: FakeSandbox, *session_ids: str) -> None:
    async def started() -> bool:
        return set(session_ids) <= set(sandbox.started)

    await until(started, f"{session_ids} running", timeout_s=30)


async def next_event(subscription: Subscription) -> ServerEvent:
    with anyio.fail_after(30):
        async for event in subscription:
            return event
    raise AssertionError("the listen stream ended")


# -- 2025-era: resources/subscribe -------------------------------------------------------------


async def test_a_2025_client_hears_each_transition_it_subscribed_to_and_nothing_of_other_sessions(
    settings: HydraSettings, sandbox: FakeSandbox, workdir: Path
) -> None:
    server = hydra_servers(settings, sandbox).operator
    inbox = Inbox()
    async with in_memory(server, "legacy") as host, in_memory(server, "legacy", inbox) as watcher:
        assert watcher.protocol_version == "2025-11-25"
        assert watcher.server_capabilities.resources is not None
        assert watcher.server_capabilities.resources.subscribe is True
        mine, other = await spawn(host, workdir), await spawn(host, workdir)
        await running(sandbox, mine, other)
        await watcher.session.subscribe_resource(session_uri(mine))
        await stop(host, other)
        await stop(host, mine)
        await inbox.until_updated(session_uri(mine))
        assert not [uri for uri in inbox.updated if other in uri], inbox.updated
        assert set(inbox.updated) == {session_uri(mine)}, "only what was subscribed"


async def test_unsubscribing_stops_a_2025_clients_updates(
    settings: HydraSettings, sandbox: FakeSandbox, workdir: Path
) -> None:
    server = hydra_servers(settings, sandbox).operator
    inbox = Inbox()
    async with in_memory(server, "legacy") as host, in_memory(server, "legacy", inbox) as watcher:
        first, second = await spawn(host, workdir), await spawn(host, workdir)
        await running(sandbox, first, second)
        for session_id in (first, second):
            await watcher.session.subscribe_resource(session_uri(session_id))
        await watcher.session.unsubscribe_resource(session_uri(first))
        await stop(host, first)
        await stop(host, second)
        await inbox.until_updated(session_uri(second))
        assert session_uri(first) not in inbox.updated


async def test_a_2025_client_follows_the_sessions_it_spawned_without_subscribing(
    settings: HydraSettings, sandbox: FakeSandbox, workdir: Path
) -> None:
    server = hydra_servers(settings, sandbox).operator
    inbox = Inbox()
    async with in_memory(server, "legacy") as other_host, in_memory(server, "legacy", inbox) as spawner:
        foreign = await spawn(other_host, workdir)
        own = await spawn(spawner, workdir)
        await running(sandbox, foreign, own)
        await stop(other_host, foreign)
        await stop(spawner, own)
        await inbox.until_updated(session_uri(own))
        assert session_uri(foreign) not in inbox.updated


# -- 2026-07-28: subscriptions/listen ----------------------------------------------------------


async def test_a_2026_listener_gets_its_sessions_transitions_and_list_changes_and_nothing_else(
    settings: HydraSettings, sandbox: FakeSandbox, workdir: Path
) -> None:
    servers = hydra_servers(settings, sandbox)
    async with in_memory(servers.operator, "legacy") as host, in_memory(servers.operator, MODERN) as listener:
        assert listener.protocol_version == MODERN
        mine, other = await spawn(host, workdir), await spawn(host, workdir)
        await running(sandbox, mine, other)
        async with listener.listen(resource_subscriptions=[session_uri(mine)]) as updates:
            await stop(host, other)
            await stop(host, mine)
            assert await next_event(updates) == ResourceUpdated(session_uri(mine)), "the other session came first"
        parent = await spawn(host, workdir)
        await running(sandbox, parent)
        async with listener.listen(resources_list_changed=True, resource_subscriptions=[tree_uri(parent)]) as changes:
            await spawn(host, workdir, parent_session_id=parent)
            # the two notifications come from different tasks: their order is not part of the promise
            heard = [await next_event(changes), await next_event(changes)]
            assert ResourcesListChanged() in heard, "a new session changes the resource list"
            assert ResourceUpdated(tree_uri(parent)) in heard, "the parent's tree grew"

        async def closed() -> bool:
            return servers.live.listening == 0

        await until(closed, "leaving the listen stream ends it on the server", timeout_s=30)


async def test_a_2025_client_cannot_listen_and_a_2026_client_cannot_subscribe(
    settings: HydraSettings, sandbox: FakeSandbox, workdir: Path
) -> None:
    server = hydra_servers(settings, sandbox).operator
    async with in_memory(server, "legacy") as old, in_memory(server, MODERN) as new:
        with pytest.raises(RuntimeError, match="requires 2026-07-28"):
            async with old.listen(resources_list_changed=True):
                pass
        with pytest.raises(MCPError, match="Method not found"):
            await new.session.subscribe_resource(session_uri(await spawn(old, workdir)))


# -- over streamable HTTP, and what an agent may follow ----------------------------------------


async def test_over_http_both_generations_get_updates_and_an_agent_only_of_its_subtree(
    settings: HydraSettings, sandbox: FakeSandbox, workdir: Path
) -> None:
    tokens = AgentTokens(settings.agent_tokens_dir)
    servers = hydra_servers(settings, sandbox, auth=HydraTokenVerifier(OPERATOR_TOKEN))
    agents_app = servers.agents.http_app(path="/mcp")
    inbox, agent_inbox = Inbox(), Inbox()
    async with (
        serving(servers.operator.http_app(path="/mcp")) as operator_socket,
        serving(agents_app) as agent_socket,
        over_socket(operator_socket, OPERATOR_TOKEN, "legacy") as host,
        over_socket(operator_socket, OPERATOR_TOKEN, "legacy", inbox) as old,
        over_socket(operator_socket, OPERATOR_TOKEN, "auto") as new,
    ):
        assert (old.protocol_version, new.protocol_version) == ("2025-11-25", MODERN)
        own, stranger = await spawn(host, workdir), await spawn(host, workdir)
        child = await spawn(host, workdir, parent_session_id=own)
        await running(sandbox, own, stranger, child)
        token = tokens.issue(own)
        async with (
            over_socket(agent_socket, token, "legacy", agent_inbox) as agent_old,
            over_socket(agent_socket, token, "auto") as agent_new,
        ):
            for refused in (session_uri(stranger), tree_uri(stranger), "hydra://status", "hydra://secrets"):
                with pytest.raises(MCPError, match="AccessDenied"):
                    await agent_old.session.subscribe_resource(refused)
                with pytest.raises(MCPError, match="AccessDenied"):
                    async with agent_new.listen(resource_subscriptions=[refused]):
                        pass
            await agent_old.session.subscribe_resource(session_uri(child))
            await old.session.subscribe_resource(session_uri(stranger))
            async with (
                new.listen(resource_subscriptions=[session_uri(stranger)]) as operator_updates,
                agent_new.listen(resources_list_changed=True, resource_subscriptions=[session_uri(child)]) as agent,
            ):
                await spawn(host, workdir)  # a new session outside the agent's subtree: no list change for it
                await stop(host, stranger)
                await stop(host, child)
                assert await next_event(operator_updates) == ResourceUpdated(session_uri(stranger))
                assert await next_event(agent) == ResourceUpdated(session_uri(child)), "the agent heard of another"
                await inbox.until_updated(session_uri(stranger))
                await agent_inbox.until_updated(session_uri(child))
                assert not [uri for uri in agent_inbox.updated if stranger in uri]
                assert agent_inbox.list_changed == 0
        await tool(host, "list_sessions")
