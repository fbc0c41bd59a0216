"""The backend-neutral description of one agent container, and the hardening every backend inherits.

A :class:`ContainerSpec` is what the orchestrator asks a backend to run. Its defaults are the hardened
values (non-root user, read-only root, every capability dropped, no new privileges, Hydra's own seccomp
profile, no core dumps, no devices, private namespaces, bounded noexec tmpfs, resource limits), and
:func:`check_hardening` refuses any spec that would weaken them, whichever backend translates it: the
rules live here, on the neutral spec, so a new backend cannot forget one. Backends call
:func:`check_hardening` again right before they translate (a spec built with ``model_construct`` or
``model_copy`` skips validation).

Every object Hydra creates carries :data:`LABEL_*` labels so a restarted server can re-attach to it and
``hydra gc`` can remove what is orphaned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.seccomp import PROFILE_NAME as SECCOMP_PROFILE

LABEL_SESSION = "hydra.session"
LABEL_PROFILE = "hydra.profile"
LABEL_PARENT = "hydra.parent"
LABEL_VERSION = "hydra.version"
LABEL_ROLE = "hydra.role"  # agent | proxy | workspace | codex-home | network
LABEL_HOME = "hydra.home"  # which Hydra (data home) owns it: gc never touches another instance's objects

HYDRA_NAME_PREFIX = "hydra-"
"""Containers Hydra creates are named with this prefix; an agent may share a network namespace only with
one of them (a gateway beside it), never with anything else."""

FORBIDDEN_BIND_PREFIXES = (
    "/var/run", "/run", "/proc", "/sys", "/dev", "/etc", "/boot", "/root", "/var/lib/docker",
)  # fmt: skip
ENGINE_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock", "crio.sock")
RESERVED_TARGETS = ("/", "/proc", "/sys", "/dev")
TMPFS_REQUIRED = ("nosuid", "nodev", "noexec")
TMPFS_OVERRIDES = ("suid", "dev", "exec")
NO_CORE_DUMPS = (0, 0)
LOG_MIN_BYTES, LOG_MAX_BYTES = 1 << 20, 1 << 30


def home_label(data_home: object) -> str:
    """The value of :data:`LABEL_HOME` for a Hydra whose data home is ``data_home``."""
    return hashlib.sha256(str(data_home).encode()).hexdigest()[:16]


class Mount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["volume", "bind"]
    source: str = Field(description="Volume name, or an absolute host path for binds.")
    target: str
    read_only: bool = False


def _default_tmpfs() -> dict[str, str]:
    return {"/tmp": "rw,nosuid,nodev,noexec,size=512m", "/home/agent": "rw,nosuid,nodev,noexec,size=256m"}


def _default_ulimits() -> dict[str, tuple[int, int]]:
    return {"core": NO_CORE_DUMPS}


class ContainerSpec(BaseModel):
    """Everything needed to create one hardened container. Hardening is not optional here: the fields
    that could weaken it exist only so that :func:`check_hardening` can refuse a weakened value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1)
    argv: list[str] = Field(min_length=1, description="Executed directly, never through a shell.")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str = "/workspace"
    user: str = Field(pattern=r"^[0-9]+:[0-9]+$", description="uid:gid; the uid is never 0.")
    labels: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    tmpfs: dict[str, str] = Field(default_factory=_default_tmpfs, description="target -> mount options.")
    network_mode: str = Field(default="none", description="'none', or 'container:hydra-…' (a Hydra gateway).")
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    name: str | None = None
    read_only_root: bool = True
    cap_drop: list[str] = Field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = Field(default_factory=list)
    no_new_privileges: bool = True
    privileged: bool = False
    devices: list[str] = Field(default_factory=list)
    pid_mode: str = Field(default="private", description="Only 'private': never the host's or another's.")
    ipc_mode: str = Field(default="private", description="Only 'private'.")
    seccomp: str = Field(
        default=SECCOMP_PROFILE, description="Only Hydra's own profile (hydra_sandbox.sandbox.seccomp)."
    )
    runtime: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="The engine's OCI runtime by name (e.g. runsc for gVisor); None: the engine's default.",
    )
    ulimits: dict[str, tuple[int, int]] = Field(
        default_factory=_default_ulimits, description="name -> (soft, hard); core is always (0, 0)."
    )

    @property
    def log_max_bytes(self) -> int:
        """What the engine may keep of the container's raw output on disk (the output limit twice over,
        at least 1 MiB, at most 1 GiB); the log goes when the container is removed."""
        return min(max(2 * self.limits.max_output_bytes, LOG_MIN_BYTES), LOG_MAX_BYTES)

    @model_validator(mode="after")
    def _hardened(self) -> ContainerSpec:
        check_hardening(self)
        return self


def _user(spec: ContainerSpec) -> None:
    uid = spec.user.partition(":")[0]
    if uid in {"0", "root", ""}:
        raise UnsafeSpecError(f"container spec user: {spec.user!r} runs as root", hint="pass a non-zero uid:gid")


def _read_only_root(spec: ContainerSpec) -> None:
    if spec.read_only_root is not True:
        raise UnsafeSpecError("container spec read_only_root: an agent's root filesystem is always read-only")


def _capabilities(spec: ContainerSpec) -> None:
    if "ALL" not in spec.cap_drop:
        raise UnsafeSpecError(
            f"container spec cap_drop: {spec.cap_drop!r} keeps capabilities", hint="cap_drop must hold 'ALL'"
        )
    if spec.cap_add:
        raise UnsafeSpecError(
            f"container spec cap_add: {spec.cap_add!r} adds capabilities", hint="agents get none: leave it empty"
        )


def _privileges(spec: ContainerSpec) -> None:
    if spec.no_new_privileges is not True:
        raise UnsafeSpecError("container spec no_new_privileges: must be true (no setuid escalation)")
    if spec.privileged is not False:
        raise UnsafeSpecError("container spec privileged: agents never run privileged")
    if spec.devices:
        raise UnsafeSpecError(f"container spec devices: {spec.devices!r} passes host devices; agents get none")
    if spec.seccomp != SECCOMP_PROFILE:
        raise UnsafeSpecError(
            f"container spec seccomp: {spec.seccomp!r} is not Hydra's own profile",
            hint=f"leave it {SECCOMP_PROFILE!r} (no io_uring, ptrace, mounts, namespaces, ...)",
        )


def _core_dumps(spec: ContainerSpec) -> None:
    core = spec.ulimits.get("core") if isinstance(spec.ulimits, dict) else None
    if core is None or tuple(core) != NO_CORE_DUMPS:
        raise UnsafeSpecError(
            f"container spec ulimits: core is {core!r}; an agent may not write core dumps (memory with secrets)",
            hint="keep core at (0, 0): a hard limit of 0 the agent cannot raise",
        )


def _namespaces(spec: ContainerSpec) -> None:
    # A Docker network, even an internal one, reaches the host's services through its gateway address,
    # so an agent gets no network at all, or the loopback of a Hydra gateway container beside it.
    mode = spec.network_mode
    if not (mode == "none" or mode.startswith("container:" + HYDRA_NAME_PREFIX)):
        raise UnsafeSpecError(
            f"container spec network_mode: {mode!r} is a network or a namespace Hydra does not own",
            hint="use 'none', or 'container:hydra-…' for a Hydra gateway beside the agent",
        )
    for field, value in (("pid_mode", spec.pid_mode), ("ipc_mode", spec.ipc_mode)):
        if value != "private":
            raise UnsafeSpecError(f"container spec {field}: {value!r} shares a namespace", hint="use 'private'")


def _engine_socket(path: str) -> bool:
    return any(name in path for name in ENGINE_SOCKETS)


def _mounts(spec: ContainerSpec) -> None:
    for mount in spec.mounts:
        if _engine_socket(mount.source) or _engine_socket(mount.target):
            raise UnsafeSpecError(
                f"container spec mounts: {mount.source} is a container engine socket "
                "(the Docker socket or another engine's)",
                hint="agents never get one: it would give them the host",
            )
        target = mount.target.rstrip("/") or "/"
        if not target.startswith("/") or target in RESERVED_TARGETS:
            raise UnsafeSpecError(
                f"container spec mounts: target {mount.target!r} is not allowed",
                hint="mount at an absolute path other than / /proc /sys /dev",
            )
        if mount.type == "bind":
            source = mount.source.rstrip("/") or "/"
            forbidden = any(source == p or source.startswith(p + "/") for p in FORBIDDEN_BIND_PREFIXES)
            if not source.startswith("/") or source == "/" or forbidden:
                raise UnsafeSpecError(
                    f"container spec mounts: binding host path {mount.source} into an agent is not allowed",
                    hint="bind only Hydra's own session directories",
                )


def _tmpfs(spec: ContainerSpec) -> None:
    for target, options in spec.tmpfs.items():
        opts = {o.partition("=")[0] for o in options.split(",")}
        missing = [o for o in (*TMPFS_REQUIRED, "size") if o not in opts]
        missing += [f"not {o}" for o in TMPFS_OVERRIDES if o in opts]  # a later 'exec' undoes 'noexec'
        if missing or target.rstrip("/") in {"", *RESERVED_TARGETS} or not target.startswith("/"):
            raise UnsafeSpecError(
                f"container spec tmpfs {target!r}: options {options!r} lack {', '.join(missing) or 'a safe target'}",
                hint="every tmpfs is nosuid,nodev,noexec (never suid, dev or exec) with a size=, "
                "at an absolute path other than / /proc /sys /dev",
            )


def _limits(spec: ContainerSpec) -> None:
    limits = spec.limits
    if not isinstance(limits, ResourceLimits) or min(limits.pids, limits.memory_mb, limits.cpus) <= 0:
        raise UnsafeSpecError(
            "container spec limits: pids, memory and cpu limits must all be set and positive",
            hint="take them from the policy's resources",
        )


HARDENING_RULES: tuple[Callable[[ContainerSpec], None], ...] = (
    _user, _read_only_root, _capabilities, _privileges, _core_dumps, _namespaces, _mounts, _tmpfs, _limits,
)  # fmt: skip
"""Every rule a container spec must pass; each raises :class:`UnsafeSpecError` naming the field."""


def check_hardening(spec: ContainerSpec) -> ContainerSpec:
    """Refuse ``spec`` if it would weaken the sandbox boundary; return it unchanged otherwise."""
    for rule in HARDENING_RULES:
        rule(spec)
    return spec


class ContainerInfo(BaseModel):
    id: str
    name: str
    image: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    status: str = Field(description="created, running, exited, dead, ...")
    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class VolumeInfo(BaseModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


class ImageInfo(BaseModel):
    """An image as the engine knows it: its content id and the labels its build wrote."""

    id: str
    labels: dict[str, str] = Field(default_factory=dict)


class NetworkInfo(BaseModel):
    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


LogStream = Literal["stdout", "stderr"]
