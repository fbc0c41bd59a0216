"""The neutral :class:`~hydra_sandbox.sandbox.spec.ContainerSpec` as docker-py ``containers.create``
arguments. Translation only: the hardening rules live on the spec
(:func:`~hydra_sandbox.sandbox.spec.check_hardening`), which is checked again here because a spec built
with ``model_construct`` or ``model_copy`` skipped validation. Pure, so it is tested without a daemon.
"""

from __future__ import annotations

from typing import Any

from docker.types import LogConfig, Ulimit
from docker.types import Mount as DockerMount

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.sandbox.seccomp import PROFILE_NAME, seccomp_profile_json
from hydra_sandbox.sandbox.spec import ContainerSpec, check_hardening


def _tmpfs(spec: ContainerSpec) -> dict[str, str]:
    """tmpfs mounts owned by the agent's uid (HOME) or sticky and world-writable (/tmp)."""
    uid, _, gid = spec.user.partition(":")
    out = {}
    for target, options in spec.tmpfs.items():
        extra = ",mode=1777" if target == "/tmp" else f",mode=0700,uid={uid},gid={gid}"
        out[target] = options + ("" if "mode=" in options else extra)
    return out


def _mounts(spec: ContainerSpec) -> list[DockerMount]:
    return [
        DockerMount(
            target=m.target,
            source=m.source,
            type=m.type,
            read_only=m.read_only,
            propagation="rprivate" if m.type == "bind" else None,
        )
        for m in spec.mounts
    ]


def _security_opt(spec: ContainerSpec) -> list[str]:
    if spec.seccomp != PROFILE_NAME:  # check_hardening refuses it first; never fall back to another profile
        raise UnsafeSpecError(f"container spec seccomp: {spec.seccomp!r} has no Docker translation")
    opts = [f"seccomp={seccomp_profile_json()}"]  # Docker takes the profile's JSON text itself
    return opts + (["no-new-privileges:true"] if spec.no_new_privileges else [])


LOG_FILES = 2


def _log_config(spec: ContainerSpec) -> LogConfig:
    """json-file, rotated: at most ``spec.log_max_bytes`` of raw output on disk, deleted with the container."""
    size = max(spec.log_max_bytes // LOG_FILES, 1)
    return LogConfig(type="json-file", config={"max-size": str(size), "max-file": str(LOG_FILES)})


def container_create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """docker-py ``containers.create`` arguments for ``spec``; refuses a spec that is not hardened."""
    check_hardening(spec)
    memory = f"{spec.limits.memory_mb}m"
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.argv),
        "entrypoint": [],
        "environment": dict(spec.env),
        "working_dir": spec.workdir,
        "user": spec.user,
        "labels": dict(spec.labels),
        "name": spec.name,
        "detach": True,
        "stdin_open": False,
        "tty": False,
        "read_only": spec.read_only_root,
        "tmpfs": _tmpfs(spec),
        "cap_drop": list(spec.cap_drop),
        "cap_add": list(spec.cap_add),
        "security_opt": _security_opt(spec),
        "ulimits": [Ulimit(name=name, soft=soft, hard=hard) for name, (soft, hard) in spec.ulimits.items()],
        "privileged": spec.privileged,
        "devices": list(spec.devices),
        "pids_limit": spec.limits.pids,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(spec.limits.cpus * 1e9),
        "network_mode": spec.network_mode,
        "ipc_mode": spec.ipc_mode,
        "mounts": _mounts(spec),
        "log_config": _log_config(spec),
        "init": True,
        "oom_kill_disable": False,
    }
    if spec.runtime is not None:
        kwargs["runtime"] = spec.runtime  # registered with the daemon (e.g. runsc); refused by Docker if not
    return kwargs
