"""The real agent image, and the sandbox rules checked from inside a hardened container."""

from __future__ import annotations

import asyncio
import uuid

import docker
import pytest

from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec
from hydra_sandbox.sandbox.supervisor import RunOutcome, supervise

pytestmark = pytest.mark.docker


async def run_in_sandbox(
    image: str, script: str, *, limits: ResourceLimits | None = None, timeout_s: float = 60
) -> tuple[RunOutcome, str]:
    runtime = DockerRuntime()
    session = f"s-{uuid.uuid4().hex[:12]}"
    spec = ContainerSpec(
        image=image,
        argv=["bash", "-c", script],
        user="1234:1234",
        labels={LABEL_SESSION: session, LABEL_ROLE: "agent", "hydra.test": "1"},
        limits=limits or ResourceLimits(memory_mb=256, pids=64),
    )
    cid = await runtime.create(spec)
    out: list[bytes] = []

    async def collect(_stream: str, chunk: bytes) -> None:
        out.append(chunk)

    try:
        await runtime.start(cid)
        outcome = await supervise(
            runtime, cid, timeout_s=timeout_s, max_output_bytes=200_000, on_output=collect, grace_s=2
        )  # type: ignore[arg-type]
    finally:
        await runtime.remove(cid)
    return outcome, b"".join(out).decode(errors="replace")


async def test_codex_runs_in_a_hardened_container(agent_image: str) -> None:
    outcome, out = await run_in_sandbox(agent_image, "codex --version")
    assert outcome.status == "completed" and "codex-cli 0.169.0" in out


async def test_agent_is_not_root_and_has_no_capabilities_or_new_privileges(agent_image: str) -> None:
    _, out = await run_in_sandbox(agent_image, "id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status")
    lines = out.split()
    assert lines[0] == "1234"
    assert "CapEff:\t0000000000000000" in out.replace(" ", "\t") or "0000000000000000" in out
    assert out.count("0000000000000000") >= 3 and "NoNewPrivs:\t1" in out.replace(" ", "\t")


async def test_root_filesystem_is_read_only_but_tmp_and_home_are_writable(agent_image: str) -> None:
    _, out = await run_in_sandbox(
        agent_image,
        "touch /usr/x 2>&1 | grep -c 'Read-only'; touch /tmp/ok && echo tmp-ok; "
        "touch $HOME/ok && echo home-ok; touch /etc/passwd 2>&1 | grep -c denied",
    )
    assert out.split() == ["1", "tmp-ok", "home-ok", "1"]


async def test_no_network_beyond_loopback(agent_image: str) -> None:
    _, out = await run_in_sandbox(agent_image, "ls /sys/class/net; cat /etc/resolv.conf 2>/dev/null | wc -l")
    assert out.split()[0] == "lo" and out.split()[-1] in {"0", "1", "2", "3"}
    assert "eth0" not in out


async def test_no_docker_socket_and_no_devices(agent_image: str) -> None:
    _, out = await run_in_sandbox(
        agent_image,
        "find / -xdev -name 'docker.sock' 2>/dev/null | wc -l; "
        "ls /run/docker.sock /var/run/docker.sock 2>&1 | grep -c 'No such'; "
        "ls /dev | tr '\\n' ' '",
    )
    parts = out.split()
    assert parts[0] == "0" and parts[1] == "2"
    assert not any(d in out for d in ("sda", "vda", "kmsg", "mem "))


@pytest.mark.parametrize(
    ("probe", "expect"),
    [
        ("mount -t tmpfs none /mnt 2>&1; echo rc=$?", "rc=32"),
        ("unshare -U true 2>&1; echo rc=$?", "Operation not permitted"),
        (
            "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)' 2>&1 | tail -1",
            "Operation not permitted",
        ),
        ("find / -xdev -perm -4000 -type f 2>/dev/null | wc -l", "0"),
        ("echo 1 > /proc/sys/kernel/sysrq 2>&1; echo rc=$?", "rc=1"),
        ("ls /proc | grep -cE '^[0-9]+$' | awk '{print ($1 < 10) ? \"few-processes\" : $1}'", "few-processes"),
        ("ps -eo comm= | grep -cxE 'dockerd|containerd|systemd'", "0"),
        ("cat /proc/kcore 2>&1 | head -c 80 | grep -cE 'No such file|Permission denied'", "1"),
        (
            'keyctl show 2>&1 || python3 -c \'import ctypes; print(ctypes.CDLL(None).syscall(250, b"user", b"k", '
            'b"v", 1, -2))\' 2>&1',
            "-1",
        ),
    ],
)
async def test_privilege_probes_fail(agent_image: str, probe: str, expect: str) -> None:
    _, out = await run_in_sandbox(agent_image, probe)
    assert expect in out, out


async def test_fork_bomb_is_contained_by_the_pids_limit(agent_image: str, docker_client: docker.DockerClient) -> None:
    outcome, out = await run_in_sandbox(
        agent_image,
        "for i in $(seq 1 200); do sleep 30 & done 2>&1 | tail -1; echo spawned; exit 3",
        limits=ResourceLimits(memory_mb=256, pids=32),
        timeout_s=60,
    )
    assert "Resource temporarily unavailable" in out or "fork" in out
    assert outcome.status == "failed" and "process limit" in (outcome.reason or "")
    assert docker_client.ping()


async def test_memory_hog_is_reported_as_out_of_memory(agent_image: str) -> None:
    outcome, _ = await run_in_sandbox(
        agent_image,
        "python3 -c 'x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))'",
        limits=ResourceLimits(memory_mb=128, pids=64),
        timeout_s=60,
    )
    assert outcome.status == "failed" and outcome.reason == "out of memory (OOM killed)"


async def test_endless_output_is_truncated_with_a_marker_and_the_agent_stopped(agent_image: str) -> None:
    outcome, out = await run_in_sandbox(agent_image, "yes hydra | head -c 2000000; echo done-writing", timeout_s=120)
    assert outcome.status == "failed" and outcome.failure == "output" and outcome.truncated
    assert len(out) < 210_000 and out.count("output truncated after 200000 bytes") == 1


async def test_wall_clock_limit_stops_a_sleeping_agent(agent_image: str) -> None:
    outcome, _ = await run_in_sandbox(agent_image, "sleep 300", timeout_s=1.5)
    assert outcome.status == "timed_out"


async def test_a_new_runtime_finds_and_follows_a_running_container_by_label(agent_image: str) -> None:
    first = DockerRuntime()
    session = f"s-{uuid.uuid4().hex[:12]}"
    spec = ContainerSpec(
        image=agent_image,
        argv=["bash", "-c", "echo one; sleep 1; echo two"],
        user="1234:1234",
        labels={LABEL_SESSION: session, LABEL_ROLE: "agent"},
    )
    cid = await first.create(spec)
    await first.start(cid)
    try:
        second = DockerRuntime(docker.from_env())
        found = await second.list_containers({LABEL_SESSION: session})
        assert [c.id for c in found] == [cid]
        chunks = [chunk async for _s, chunk in second.stream_logs(cid)]
        assert b"".join(chunks).split() == [b"one", b"two"]
        assert await asyncio.wait_for(second.wait(cid), 30) == 0
    finally:
        await first.remove(cid)
