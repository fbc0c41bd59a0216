"""Hydra's configuration: one typed object, read from ``HYDRA_*`` variables and an optional ``.env``.

Precedence, highest first: arguments passed to :class:`HydraSettings`, environment variables,
the ``.env`` file named by ``HYDRA_ENV_FILE`` (default ``./.env``), then the defaults below.
Nothing is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hydra_sandbox import __version__
from hydra_sandbox.docker_hosts import parse_docker_hosts
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.image_tags import default_agent_image

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
"""What ships inside the package: built-in ``profiles/``, ``policies/`` and the ``images/`` build contexts."""
REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this module was loaded from; meaningful only in a source checkout, never in a wheel install."""
CODEX_VERSION = "0.169.0"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _default_data_home() -> Path:
    return Path(platformdirs.user_data_dir("hydra", appauthor=False))


def _default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("hydra", appauthor=False))


def _default_runtime_dir() -> Path:
    # Short on purpose: a Unix socket path is limited to 108 bytes, and relay sockets live below it.
    return Path(f"/tmp/hydra-run-{os.getuid()}")


def _default_model_dir() -> Path:
    return Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"


class HydraSettings(BaseSettings):
    """Every setting Hydra reads. Field names map to ``HYDRA_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="HYDRA_", extra="forbid", validate_default=True, populate_by_name=True)

    data_home: Path = Field(default_factory=_default_data_home, description="Journal, Chroma, sessions.")
    chroma_url: str | None = Field(
        default=None, description="Chroma server URL (http://host:port); unset means embedded Chroma."
    )
    chroma_token: SecretStr | None = Field(
        default=None, description="Bearer token for a Chroma server behind a token gate (the Helm chart's)."
    )
    chroma_path: Path | None = Field(default=None, description="Embedded Chroma directory.")
    embedding_model_dir: Path = Field(
        default_factory=_default_model_dir,
        description="Directory holding all-MiniLM-L6-v2 model.onnx and tokenizer.json.",
    )
    agent_image: str = Field(
        default="",
        description="Agent image tag; unset: hydra-agent:codex-<codex_version>, the tag `hydra images build` gives it.",
    )
    base_image: str | None = Field(default=None, description="Base image for builds; unset builds one.")
    agent_runtime: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="OCI runtime for agent containers as the engine names it, e.g. runsc (gVisor); unset: its default.",
    )
    codex_version: str = Field(
        default=CODEX_VERSION,
        pattern=r"^\d+\.\d+\.\d+[0-9A-Za-z.+-]*$",
        description="Codex CLI version `hydra images build` installs; the default agent image's tag follows it.",
    )
    model: str = Field(default="gpt-5-codex", description="Model name passed to Codex.")
    model_base_url: str | None = Field(
        default=None, description="OpenAI-compatible Responses API endpoint, e.g. http://127.0.0.1:8080/v1."
    )
    model_api_key: SecretStr | None = Field(default=None, description="Model API key, added by the gateway.")
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="OPENAI_API_KEY",
        description="The usual OpenAI variable: a model key source after HYDRA_MODEL_API_KEY (model_credentials).",
    )
    codex_home: Path | None = Field(
        default=None,
        validation_alias="CODEX_HOME",
        description="The operator's Codex home, whose auth.json is a model key source; unset: ~/.codex.",
    )
    secrets: list[SecretStr] = Field(default_factory=list, description="Extra values to mask everywhere.")
    builtin_profiles_dir: Path = Field(
        default=BUILTIN_DIR / "profiles", description="Built-in profiles (shipped in the package)."
    )
    builtin_policies_dir: Path = Field(
        default=BUILTIN_DIR / "policies", description="Built-in policies (shipped in the package)."
    )
    images_dir: Path = Field(
        default=BUILTIN_DIR / "images", description="Build contexts of the agent and Chroma images."
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir, description="Downloads kept between builds (Codex CLI, wheels)."
    )
    runtime_dir: Path = Field(
        default_factory=_default_runtime_dir,
        description="Short private directory for relay and endpoint sockets (Unix socket paths are short).",
    )
    log_level: LogLevel = Field(default="WARNING", description="Log level of `hydra serve` (stderr).")
    profiles_dir: Path | None = Field(default=None, description="User profiles; override built-ins by id.")
    masking_rules_dir: Path | None = Field(
        default=None,
        description="Operator masking rules (*.yaml) added to the built-in ones; try them with `hydra masking test`.",
    )
    policies_dir: Path | None = Field(default=None, description="User policies; override built-ins by name.")
    max_concurrent_agents: int = Field(default=4, ge=1, le=256)
    engine_max_agents: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Running agents one Docker engine of HYDRA_DOCKER_HOST takes (any Hydra's count), when several "
        "are listed; unset: HYDRA_MAX_CONCURRENT_AGENTS. See docs/remote-docker.md.",
    )
    agent_uid: int | None = Field(default=None, ge=0, description="uid agents run as; unset: workspace owner.")
    transport: Literal["stdio", "http"] = "stdio"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8765, ge=1, le=65535)
    http_token: SecretStr | None = None
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host names the HTTP transport answers (loopback is always allowed), e.g. "
        '["hydra.team.svc:8765"]; fnmatch patterns such as "hydra.*" work.',
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without the bearer token (only behind a network you trust).",
    )
    disk_warning_bytes: int = Field(default=10 * 1024**3, ge=0)
    backend: Literal["docker", "kubernetes"] = Field(
        default="docker",
        description="Where agents run: 'docker' (a Docker engine sharing this machine's filesystem), or "
        "'kubernetes' (a pod per agent; docs/kubernetes.md).",
    )
    kubernetes_namespace: str = Field(
        default="hydra",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="The one namespace the Kubernetes backend creates agent pods and NetworkPolicies in.",
    )
    kubernetes_runtime_class: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=63,
        description="RuntimeClass of agent pods, e.g. gvisor or kata (the cluster defines it); unset: the default.",
    )
    kubernetes_seccomp_profile: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$",
        max_length=255,
        description="Hydra's seccomp profile (`hydra_sandbox.sandbox.seccomp`) as installed on every agent node, "
        "relative to the kubelet's seccomp directory, e.g. hydra/agent.json; unset: the runtime's default profile.",
    )
    kubernetes_kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file of the Kubernetes backend; unset: in-cluster, else KUBECONFIG or ~/.kube/config.",
    )
    kubernetes_context: str | None = Field(
        default=None, description="Kubeconfig context of the Kubernetes backend; unset: the file's current one."
    )
    kubernetes_warm_pool: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=50,
        description="Name of Hydra's agent-sandbox SandboxWarmPool (and SandboxTemplate) in the namespace, from "
        "`hydra kubernetes warm-pool-manifest`; unset: a pod of its own per agent. docs/kubernetes.md, 'Warm pools'.",
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker engine(s) for agents, comma-separated: unix:///path, tcp://HOST:PORT (mutual TLS), "
        "ssh://[USER@]HOST; unset: DOCKER_HOST or the local socket. See docs/remote-docker.md.",
    )
    docker_tls_dir: Path | None = Field(
        default=None,
        description="ca.pem, cert.pem, key.pem for tcp:// engines; a HOST_PORT subdirectory overrides per engine.",
    )
    docker_ssh_config: Path | None = Field(
        default=None,
        description="OpenSSH client configuration file for ssh:// engines (read with ssh -F instead of "
        "~/.ssh/config): keys, known hosts, jump hosts. Host keys must be known; no prompt is ever answered.",
    )
    workspace_transport: Literal["overlay", "archive"] = Field(
        default="overlay",
        description="How the docker backend brings the workspace in: 'overlay' (a volume over the layer on "
        "this disk, O(1)) or 'archive' (the visible tree copied into a volume and the changes copied back, "
        "for an engine that does not share this machine's filesystem).",
    )
    gateway_image: str = Field(
        default=f"hydra-gateway:{__version__}",
        min_length=1,
        description="Image of the gateway container that enforces egress beside an agent on a remote engine "
        "(`hydra images build` builds it, `hydra images copy` puts it there); on Kubernetes, of the gateway pod: "
        "an image with Hydra installed that the cluster can pull (e.g. the server's).",
    )
    gateway_network: str = Field(
        default="bridge",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Docker network of the gateway containers on a remote engine (the agent itself has none); "
        "never 'host' or 'none'.",
    )
    agent_mcp: bool = Field(
        default=True,
        description="Give agents whose policy allows children Hydra's MCP endpoint, so they can delegate.",
    )

    @field_validator("gateway_network")
    @classmethod
    def _check_gateway_network(cls, value: str) -> str:
        if value in {"host", "none"}:
            raise ValueError(
                f"{value!r} is not a network a gateway may use: 'host' is the engine machine's own network, 'none' "
                "reaches no model; name a bridge network (default 'bridge')"
            )
        return value

    @field_validator("openai_api_key", "codex_home", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty ``CODEX_HOME`` or ``OPENAI_API_KEY`` means unset, as the tools that define them read it."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("chroma_url")
    @classmethod
    def _check_chroma_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8000")
        return value

    @field_validator("model_base_url")
    @classmethod
    def _check_model_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8080/v1")
        return value.rstrip("/") if value else value

    @field_validator("docker_host")
    @classmethod
    def _check_docker_host(cls, value: str | None) -> str | None:
        """The URLs' form only (TLS files are looked for when an engine is opened)."""
        if value is None or not value.strip():
            return None
        try:
            parse_docker_hosts(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @model_validator(mode="after")
    def _agent_image_follows_codex(self) -> HydraSettings:
        """Unset (or blank), the agent image is the one built for ``codex_version``."""
        if not self.agent_image.strip():
            self.agent_image = default_agent_image(self.codex_version)
        return self

    @property
    def journal_path(self) -> Path:
        return self.data_home / "journal.sqlite3"

    @property
    def effective_chroma_path(self) -> Path:
        return self.chroma_path or self.data_home / "chroma"

    @property
    def sessions_dir(self) -> Path:
        return self.data_home / "sessions"

    @property
    def agent_tokens_dir(self) -> Path:
        return self.data_home / "agent-tokens"

    @property
    def profile_dirs(self) -> list[Path]:
        """Built-in first, then the user's: later directories override earlier ones by id."""
        return [self.builtin_profiles_dir, *([self.profiles_dir] if self.profiles_dir else [])]

    @property
    def policy_dirs(self) -> list[Path]:
        return [self.builtin_policies_dir, *([self.policies_dir] if self.policies_dir else [])]

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of field ``name``: ``HYDRA_<NAME>``, or the field's own alias for the
        few variables other tools define too (``OPENAI_API_KEY``, ``CODEX_HOME``)."""
        field = cls.model_fields.get(name)
        alias = field.validation_alias if field is not None else None
        return alias if isinstance(alias, str) else f"HYDRA_{name.upper()}"

    def masked_dump(self) -> dict[str, Any]:
        """The effective settings as plain data, with every secret replaced by ``********``."""
        data: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
                value = ["********"] * len(value)
            elif isinstance(value, Path):
                value = str(value)
            data[name] = value
        return data


def env_file() -> str:
    """The ``.env`` file settings are read from: ``HYDRA_ENV_FILE``, default ``.env`` (this module is
    the one place of the package that reads the process environment)."""
    return os.environ.get("HYDRA_ENV_FILE", ".env")


def load_settings(**overrides: Any) -> HydraSettings:
    """Read the settings now; a bad value becomes a :class:`ConfigError` naming the variable."""
    env_file_name = env_file()
    try:
        return HydraSettings(_env_file=env_file_name, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            head, *rest = [str(p) for p in err["loc"]] or ["settings"]
            where = head if head.isupper() else HydraSettings.variable(head)  # an alias is its own variable
            problems.append(".".join([where, *rest]) + f": {err['msg']}")
        raise ConfigError(
            "invalid settings: " + "; ".join(problems),
            hint=f"fix the environment variable or {env_file_name}",
        ) from None
