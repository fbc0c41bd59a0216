"""The neutral spec as docker-py arguments, checked without a daemon: every hardened field reaches
Docker, and a spec that skipped validation is still refused (the rules themselves: test_spec_hardening)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.docker.create_args import container_create_kwargs
from hydra_sandbox.sandbox.seccomp import seccomp_profile
from hydra_sandbox.sandbox.spec import ContainerSpec, Mount


def spec(**kw: object) -> ContainerSpec:
    base: dict[str, object] = {
        "image": "hydra-agent:test",
        "argv": ["codex", "exec", "--", "a; rm -rf /"],
        "user": "1000:1000",
        "limits": ResourceLimits(cpus=1.5, memory_mb=512, pids=64),
    }
    base.update(kw)
    return ContainerSpec.model_validate(base)


def test_argv_is_passed_as_a_list_never_a_shell_string() -> None:
    kwargs = container_create_kwargs(spec())
    assert kwargs["command"] == ["codex", "exec", "--", "a; rm -rf /"]
    assert kwargs["entrypoint"] == []


def test_every_capability_is_dropped_and_none_added() -> None:
    kwargs = container_create_kwargs(spec())
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["cap_add"] == []


def test_no_new_privileges_and_not_privileged() -> None:
    kwargs = container_create_kwargs(spec())
    assert "no-new-privileges:true" in kwargs["security_opt"]
    assert kwargs["privileged"] is False and kwargs["devices"] == []


def test_hydras_own_seccomp_profile_is_passed_as_its_json_text() -> None:
    kwargs = container_create_kwargs(spec())
    profiles = [opt.removeprefix("seccomp=") for opt in kwargs["security_opt"] if opt.startswith("seccomp=")]
    assert len(profiles) == 1 and json.loads(profiles[0]) == seccomp_profile()


def test_core_dumps_have_a_hard_limit_of_zero() -> None:
    (core,) = [u for u in container_create_kwargs(spec())["ulimits"] if u["Name"] == "core"]
    assert core["Soft"] == core["Hard"] == 0


def test_root_filesystem_is_read_only_with_tmpfs_for_tmp_and_home() -> None:
    kwargs = container_create_kwargs(spec())
    assert kwargs["read_only"] is True
    assert set(kwargs["tmpfs"]) == {"/tmp", "/home/agent"}
    assert all({"nosuid", "nodev", "noexec"} <= set(opts.split(",")) for opts in kwargs["tmpfs"].values())


def test_limits_come_from_the_policy_with_swap_equal_to_memory() -> None:
    kwargs = container_create_kwargs(spec())
    assert kwargs["pids_limit"] == 64
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "512m"
    assert kwargs["nano_cpus"] == 1_500_000_000


def test_no_network_and_no_shared_namespaces_by_default() -> None:
    kwargs = container_create_kwargs(spec())
    assert kwargs["network_mode"] == "none" and kwargs["ipc_mode"] == "private"
    assert "pid_mode" not in kwargs and "uts_mode" not in kwargs and "userns_mode" not in kwargs


@pytest.mark.parametrize("user", ["0:0", "root:0"])
def test_root_user_is_refused(user: str) -> None:
    with pytest.raises((UnsafeSpecError, ValidationError), match="user"):
        container_create_kwargs(spec(user=user))


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run/docker.sock", "/home/u/docker.sock"])
def test_docker_socket_is_never_mounted(source: str) -> None:
    with pytest.raises(UnsafeSpecError, match="Docker socket|not allowed"):
        container_create_kwargs(spec(mounts=[Mount(type="bind", source=source, target="/var/run/docker.sock")]))


@pytest.mark.parametrize("source", ["/", "/etc", "/proc", "/sys", "/dev", "/root", "/var/lib/docker/volumes"])
def test_sensitive_host_paths_cannot_be_bound(source: str) -> None:
    with pytest.raises(UnsafeSpecError, match="not allowed"):
        container_create_kwargs(spec(mounts=[Mount(type="bind", source=source, target="/x")]))


@pytest.mark.parametrize("mode", ["host", "container:abc123", "ns:/proc/1/ns/net"])
def test_shared_network_namespaces_are_refused(mode: str) -> None:
    with pytest.raises(UnsafeSpecError, match="network_mode"):
        container_create_kwargs(spec(network_mode=mode))


def test_session_bind_mounts_are_read_only_when_asked() -> None:
    kwargs = container_create_kwargs(
        spec(mounts=[Mount(type="bind", source="/srv/hydra/s1/egress", target="/run/hydra", read_only=True)])
    )
    assert kwargs["mounts"][0]["ReadOnly"] is True


@pytest.mark.parametrize(
    "update",
    [
        {"privileged": True},
        {"cap_add": ["SYS_ADMIN"]},
        {"user": "0:0"},
        {"network_mode": "host"},
        {"seccomp": "unconfined"},
        {"ulimits": {"core": (0, -1)}},
    ],
    ids=["privileged", "cap_add", "root", "host-network", "seccomp", "core"],
)
def test_a_spec_that_skipped_validation_is_still_refused(update: dict[str, object]) -> None:
    weakened = spec().model_copy(update=update)  # model_copy does not validate
    with pytest.raises(UnsafeSpecError):
        container_create_kwargs(weakened)


def test_the_engine_log_is_json_file_capped_at_twice_the_output_limit() -> None:
    limits = ResourceLimits(cpus=1, memory_mb=512, pids=64, max_output_bytes=8 << 20)
    config = container_create_kwargs(spec(limits=limits))["log_config"]
    assert config["Type"] == "json-file"
    assert int(config["Config"]["max-size"]) * int(config["Config"]["max-file"]) == 16 << 20


def test_the_engine_log_cap_has_a_floor_and_a_ceiling() -> None:
    small = spec(limits=ResourceLimits(max_output_bytes=1024)).log_max_bytes
    huge = spec(limits=ResourceLimits(max_output_bytes=10 << 30)).log_max_bytes
    assert small == 1 << 20 and huge == 1 << 30


def test_agents_run_under_the_engines_default_runtime_unless_one_is_named() -> None:
    assert "runtime" not in container_create_kwargs(spec())
    assert container_create_kwargs(spec(runtime="runsc"))["runtime"] == "runsc"


@pytest.mark.parametrize("name", ["", "runsc --debug", "../runc", "-x"])
def test_a_runtime_name_is_a_plain_name(name: str) -> None:
    with pytest.raises(ValidationError, match="runtime"):
        spec(runtime=name)
