"""The backend-neutral description of a container (:class:`ContainerSpec`) and what a runtime
reports about the objects it made.

Every object Hydra creates carries :data:`LABEL_*` labels so a restarted server can re-attach to it and
``hydra gc`` can remove what is orphaned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.policy import ResourceLimits

LABEL_SESSION = "hydra.session"
LABEL_PROFILE = "hydra.profile"
LABEL_PARENT = "hydra.parent"
LABEL_VERSION = "hydra.version"
LABEL_ROLE = "hydra.role"  # agent | proxy | workspace | codex-home | network
LABEL_HOME = "hydra.home"  # which Hydra (data home) owns it: gc never touches another instance's objects


def home_label(data_home: object) -> str:
    import hashlib

    return hashlib.sha256(str(data_home).encode()).hexdigest()[:16]


class Mount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["volume", "bind"]
    source: str = Field(description="Volume name, or an absolute host path for binds.")
    target: str
    read_only: bool = False


class ContainerSpec(BaseModel):
    """Everything needed to create one hardened container. Hardening is not optional here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str
    argv: list[str] = Field(min_length=1, description="Executed directly, never through a shell.")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str = "/workspace"
    user: str = Field(pattern=r"^[1-9][0-9]*:[0-9]+$", description="uid:gid, never root.")
    labels: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    tmpfs: dict[str, str] = Field(
        default_factory=lambda: {
            "/tmp": "rw,nosuid,nodev,size=512m",
            "/home/agent": "rw,nosuid,nodev,size=256m",
        }
    )
    network_mode: str = "none"
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    name: str | None = None
    stdin_open: bool = False


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


class NetworkInfo(BaseModel):
    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


LogStream = Literal["stdout", "stderr"]
