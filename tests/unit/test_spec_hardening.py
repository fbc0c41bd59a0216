"""Hardening is a property of the backend-neutral container spec: each rule refuses the weakening it
names, whichever backend would translate the spec, and a new rule cannot be added without a case here."""

from __future__ import annotations

from typing import Any

import pytest

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.spec import HARDENING_RULES, ContainerSpec, Mount, check_hardening


def spec(**kw: Any) -> ContainerSpec:
    return ContainerSpec.model_validate({"image": "hydra-agent:test", "argv": ["codex"], "user": "1000:1000"} | kw)


def bind(source: str, target: str = "/x") -> list[Mount]:
    return [Mount(type="bind", source=source, target=target)]


# rule -> (weakening, a word the refusal must contain); every rule in HARDENING_RULES has cases here.
WEAKENINGS: dict[str, list[tuple[dict[str, Any], str]]] = {
    "_user": [({"user": "0:0"}, "root"), ({"user": "0:1000"}, "root")],
    "_read_only_root": [({"read_only_root": False}, "read_only_root")],
    "_capabilities": [
        ({"cap_drop": []}, "cap_drop"),
        ({"cap_drop": ["NET_RAW"]}, "cap_drop"),
        ({"cap_add": ["NET_ADMIN"]}, "cap_add"),
    ],
    "_privileges": [
        ({"no_new_privileges": False}, "no_new_privileges"),
        ({"privileged": True}, "privileged"),
        ({"devices": ["/dev/kvm"]}, "devices"),
        ({"seccomp": "unconfined"}, "seccomp"),
        ({"seccomp": "runtime-default"}, "seccomp"),
        ({"seccomp": ""}, "seccomp"),
    ],
    "_core_dumps": [
        ({"ulimits": {}}, "core"),
        ({"ulimits": {"core": (0, -1)}}, "core"),
        ({"ulimits": {"core": (0, 1 << 30)}}, "core"),
        ({"ulimits": {"core": (1 << 20, 1 << 20)}}, "core"),
        ({"ulimits": {"nofile": (1024, 1024)}}, "core"),
    ],
    "_namespaces": [
        ({"network_mode": "host"}, "network_mode"),
        ({"network_mode": "bridge"}, "network_mode"),
        ({"network_mode": "hydra-internal-net"}, "network_mode"),
        ({"network_mode": "container:someone-else"}, "network_mode"),
        ({"network_mode": "ns:/proc/1/ns/net"}, "network_mode"),
        ({"pid_mode": "host"}, "pid_mode"),
        ({"pid_mode": "container:abc"}, "pid_mode"),
        ({"ipc_mode": "host"}, "ipc_mode"),
    ],
    "_mounts": [
        ({"mounts": bind("/var/run/docker.sock", "/var/run/docker.sock")}, "engine socket"),
        ({"mounts": bind("/srv/x/containerd.sock")}, "engine socket"),
        ({"mounts": [Mount(type="volume", source="v", target="/run/podman.sock")]}, "engine socket"),
        ({"mounts": bind("/")}, "not allowed"),
        ({"mounts": bind("/etc")}, "not allowed"),
        ({"mounts": bind("/proc/1/root")}, "not allowed"),
        ({"mounts": bind("/var/lib/docker/volumes")}, "not allowed"),
        ({"mounts": bind("relative/path")}, "not allowed"),
        ({"mounts": bind("/srv/hydra/s1", "/proc")}, "target"),
        ({"mounts": bind("/srv/hydra/s1", "relative")}, "target"),
    ],
    "_tmpfs": [
        ({"tmpfs": {"/tmp": "rw,nodev,size=1m"}}, "nosuid"),
        ({"tmpfs": {"/tmp": "rw,nosuid,size=1m"}}, "nodev"),
        ({"tmpfs": {"/tmp": "rw,nosuid,nodev,noexec"}}, "size"),
        ({"tmpfs": {"/tmp": "rw,nosuid,nodev,size=1m"}}, "noexec"),
        ({"tmpfs": {"/home/agent": "rw,exec,nosuid,nodev,size=1m"}}, "noexec"),
        ({"tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,exec,size=1m"}}, "not exec"),
        ({"tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,suid,size=1m"}}, "not suid"),
        ({"tmpfs": {"/dev": "rw,nosuid,nodev,size=1m"}}, "tmpfs"),
    ],
    "_limits": [
        ({"limits": None}, "limits"),
        ({"limits": ResourceLimits.model_construct(cpus=1.0, memory_mb=512, pids=0)}, "limits"),
    ],
}
CASES = [(rule, update, word) for rule, cases in WEAKENINGS.items() for update, word in cases]


def test_every_hardening_rule_has_weakenings_that_it_refuses() -> None:
    assert {rule.__name__ for rule in HARDENING_RULES} == set(WEAKENINGS)


def test_the_defaults_are_the_hardened_values() -> None:
    s = spec()
    assert s.read_only_root and s.no_new_privileges and not s.privileged
    assert s.cap_drop == ["ALL"] and s.cap_add == [] and s.devices == []
    assert s.network_mode == "none" and s.pid_mode == s.ipc_mode == "private"
    assert s.seccomp == "hydra" and s.ulimits["core"] == (0, 0)
    assert all({"nosuid", "nodev", "noexec"} <= set(o.split(",")) and "size=" in o for o in s.tmpfs.values())


@pytest.mark.parametrize(("rule", "update", "word"), CASES, ids=[f"{r}-{i}" for i, (r, _u, _w) in enumerate(CASES)])
def test_a_weakened_spec_is_refused_naming_what_is_wrong(rule: str, update: dict[str, Any], word: str) -> None:
    weakened = spec().model_copy(update=update)  # skips validation: the check itself must catch it
    with pytest.raises(UnsafeSpecError, match=word):
        check_hardening(weakened)


@pytest.mark.parametrize(("rule", "update", "word"), [c for c in CASES if c[1].get("limits", 1) is not None])
def test_a_weakened_spec_cannot_even_be_built(rule: str, update: dict[str, Any], word: str) -> None:
    with pytest.raises(UnsafeSpecError):
        spec(**update)


@pytest.mark.parametrize("mode", ["none", "container:hydra-gw-s1"])
def test_an_agent_gets_no_network_or_only_a_hydra_gateways_loopback(mode: str) -> None:
    assert check_hardening(spec(network_mode=mode)).network_mode == mode


def test_hydra_session_binds_and_volumes_are_allowed() -> None:
    mounts = [
        Mount(type="bind", source="/tmp/hydra-run-0/s1", target="/run/hydra", read_only=True),
        Mount(type="volume", source="hydra-ws-s1", target="/workspace"),
    ]
    assert check_hardening(spec(mounts=mounts)).mounts == mounts
