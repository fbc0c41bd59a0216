"""What a :class:`~hydra_sandbox.model_gateway.ModelGateway` serves: one upstream, its routes, its
credential, its limits; and the two configurations Hydra uses (the model API, the agent MCP endpoint)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["MCP_ROUTES", "MODEL_ROUTES", "GatewayConfig", "mcp_gateway_config", "model_gateway_config"]

MODEL_ROUTES = (("POST", "/responses"), ("POST", "/responses/compact"), ("GET", "/models"))
"""What Codex asks of a Responses-API endpoint, below its base path (exact paths, any query)."""
MCP_ROUTES = (("POST", ""), ("GET", ""), ("DELETE", ""))
"""Streamable HTTP MCP: the endpoint's own path, nothing below it."""


class GatewayConfig(BaseModel):
    """What one gateway serves: which upstream, which routes, which credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upstream_url: str = Field(description="http(s)://host[:port][/base]; routes are below its path.")
    upstream_socket: Path | None = Field(default=None, description="Connect here instead (plain HTTP).")
    routes: tuple[tuple[str, str], ...] = MODEL_ROUTES
    accepted_hosts: tuple[str, ...] = Field(min_length=1, description="Host values the agent may send.")
    credential_header: str = "authorization"
    credential: SecretStr | None = Field(default=None, description="The header's full value, added upstream.")
    record_usage: bool = True
    ca_file: Path | None = Field(default=None, description="Trust only this CA bundle (default: the system's).")
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    idle_s: float = Field(default=600.0, gt=0, description="No byte either way for this long ends a request.")
    total_s: float = Field(default=3600.0, gt=0, description="The longest one request may take.")
    keepalive_s: float = Field(default=120.0, gt=0, description="An idle agent connection is closed after this.")

    @field_validator("upstream_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        extras = parts.query or parts.fragment or parts.username
        if parts.scheme not in ("http", "https") or not parts.hostname or extras:
            raise ValueError(f"{value[:100]!r} is not an http(s)://host[:port][/path] URL")
        return value.rstrip("/")

    @field_validator("credential")
    @classmethod
    def _header_value(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not all(0x20 <= ord(c) < 0x7F for c in value.get_secret_value()):
            raise ValueError("the credential holds a line break, control or non-ASCII character (not shown)")
        return value

    @field_validator("accepted_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(host.lower() for host in value)

    @property
    def tls(self) -> bool:
        return urlsplit(self.upstream_url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.upstream_url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.upstream_url).port or (443 if self.tls else 80)

    @property
    def base_path(self) -> str:
        return urlsplit(self.upstream_url).path.rstrip("/")

    @property
    def authority(self) -> str:
        """The Host header the upstream gets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        return host if default else f"{host}:{self.port}"


def _loopback_hosts(port: int) -> tuple[str, ...]:
    return (f"127.0.0.1:{port}", f"localhost:{port}")


def model_gateway_config(
    model_url: str, api_key: SecretStr | None, *, listen_port: int, ca_file: Path | None = None
) -> GatewayConfig:
    """The gateway to a Responses-API endpoint; the agent's Codex uses ``http://127.0.0.1:PORT{base}``."""
    credential = SecretStr(f"Bearer {api_key.get_secret_value()}") if api_key is not None else None
    return GatewayConfig(
        upstream_url=model_url, accepted_hosts=_loopback_hosts(listen_port), credential=credential, ca_file=ca_file
    )


def mcp_gateway_config(endpoint_socket: Path, token: SecretStr, *, listen_port: int) -> GatewayConfig:
    """The gateway to Hydra's agent MCP endpoint (``/mcp`` on a Unix socket), adding the agent's token."""
    return GatewayConfig(
        upstream_url="http://localhost/mcp",
        upstream_socket=endpoint_socket,
        routes=MCP_ROUTES,
        accepted_hosts=_loopback_hosts(listen_port),
        credential=SecretStr(f"Bearer {token.get_secret_value()}"),
        record_usage=False,
        idle_s=3600.0,
        total_s=86400.0,
    )


