"""The Kubernetes egress placement against kmock: a gateway pod that never gets ready fails the run
naming the pod and its last state (and is removed), a spent budget deletes the gateway pod, the relay
target is only ever a plain IPv4 address, ``none`` gets no pod, and delegation is refused up front."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.sandbox.backends.kubernetes.egress import KubernetesEgress, pod_target
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import gateway_pod_name
from hydra_sandbox.sandbox.egress import EgressPlan, GatewaySecrets
from tests.kube_kit import HOME, PODS, UidEmulator, paths, runtime_for, until

SID = "s-0a1b2c3d4e5f"
GATEWAY = gateway_pod_name(SID)

pytestmark = pytest.mark.kmock(cls=UidEmulator)


def plan(mode: str = "model-only") -> EgressPlan:
    relay = "none" if mode == "none" else "gateway"
    return EgressPlan(session_id=SID, mode=mode, relay=relay, model_url="http://model.test:8080/v1")


def egress(server: kmock.KubernetesEmulator, ready_deadline_s: float = 30) -> KubernetesEgress:
    return KubernetesEgress(runtime_for(server), "hydra-server:test", home=HOME, ready_deadline_s=ready_deadline_s)


def gateway_live(server: kmock.KubernetesEmulator) -> bool:
    return any(
        k[0].plural == "pods" and k[2] == GATEWAY and not server.objects[k].deleted for k in list(server.objects)
    )


async def set_status(server: kmock.KubernetesEmulator, status: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{str(server.url).rstrip('/')}{PODS}/{GATEWAY}"
        assert (await http.patch(url, json={"status": status})).status == 200


def serve_lines(server: kmock.KubernetesEmulator, *lines: dict[str, Any]) -> None:
    body = b"".join(f"2026-01-01T00:00:0{i}Z ".encode() + json.dumps(m).encode() + b"\n" for i, m in enumerate(lines))
    server[f"get {PODS}/{GATEWAY}/log"] << (lambda _request: body)


RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


async def test_a_gateway_pod_that_cannot_pull_its_image_fails_naming_the_pod_and_its_state(
    kmock: kmock.KubernetesEmulator,
) -> None:
    placement = egress(kmock, ready_deadline_s=1)

    async def stuck() -> None:
        await until(lambda: gateway_live(kmock))
        waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}
        await set_status(kmock, {"phase": "Pending", "containerStatuses": [{"name": "gateway", "state": waiting}]})

    kubelet = asyncio.create_task(stuck())
    with pytest.raises(RuntimeUnavailableError) as raised:
        async with placement.serve(plan(), secrets=GatewaySecrets()):
            pytest.fail("served without a ready gateway")
    await kubelet
    said = str(raised.value)
    assert GATEWAY in said and "ImagePullBackOff" in said and "phase Pending" in said
    assert "HYDRA_GATEWAY_IMAGE" in (raised.value.hint or "")
    assert not gateway_live(kmock), "the failed gateway pod was left behind"


async def test_a_spent_budget_deletes_the_gateway_pod(kmock: kmock.KubernetesEmulator) -> None:
    told: list[TokenUsage] = []

    def budget(usage: TokenUsage) -> str | None:
        told.append(usage)
        return "the session's model token budget is spent"

    usage = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2, "seq": 0}

    async def node() -> None:
        await until(lambda: gateway_live(kmock))
        await set_status(  # the pod has its address before it logs the usage that deletes it
            kmock,
            {"phase": "Running", "podIP": "10.1.2.3", "containerStatuses": [{"name": "gateway", "state": RUNNING}]},
        )
        serve_lines(kmock, {"ready": True}, {"usage": usage})

    kubelet = asyncio.create_task(node())
    async with egress(kmock).serve(plan(), secrets=GatewaySecrets(), on_usage=budget) as active:
        await kubelet
        assert active.env["HYDRA_EGRESS_TARGET"] == "10.1.2.3:18080"
        await until(lambda: not gateway_live(kmock))
    assert [u.total_tokens for u in told] == [2]
    assert ("DELETE", f"{PODS}/{GATEWAY}") in paths(kmock)


@pytest.mark.parametrize("ip", ["", "fd00::7", "10.0.0.7,bind=0.0.0.0", "gateway.local", None])
def test_the_relay_target_is_only_a_plain_ipv4_address(ip: str | None) -> None:
    with pytest.raises(RuntimeUnavailableError, match="is not an IPv4 address"):
        pod_target({"metadata": {"name": GATEWAY}, "status": {"podIP": ip}})


def test_a_pod_ip_becomes_the_target_with_the_gateway_port() -> None:
    assert pod_target({"status": {"podIP": "10.244.0.5"}}) == "10.244.0.5:18080"


async def test_a_session_without_egress_gets_no_gateway_pod(kmock: kmock.KubernetesEmulator) -> None:
    async with egress(kmock).serve(plan("none")) as active:
        assert active.env == {} and active.network_mode == "none"
    assert paths(kmock) == []


async def test_delegation_is_refused_before_any_request(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent MCP gateway cannot run beside an agent pod"):
        async with egress(kmock).serve(plan(), tmp_path / "mcp.sock"):
            pytest.fail("served delegation")
    assert paths(kmock) == []
