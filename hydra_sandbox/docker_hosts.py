"""Which Docker engines run agents: ``HYDRA_DOCKER_HOST`` and ``HYDRA_DOCKER_TLS_DIR``, read and checked.

``HYDRA_DOCKER_HOST`` is one engine URL or several, comma-separated:

* ``unix:///path/docker.sock``: an engine on this machine (its socket's file permissions guard it);
* ``tcp://HOST:PORT``: an engine reached over TCP, always with mutual TLS. Plain TCP is refused even on
  loopback: any local process may connect to a loopback port, and a Docker API is root on its machine.
  The port defaults to 2376, Docker's TLS port;
* ``ssh://[USER@]HOST[:PORT]``: an engine reached through the ``ssh`` client (keys and config are
  OpenSSH's own, or the file ``HYDRA_DOCKER_SSH_CONFIG`` names; the host key must already be known; the
  remote user must be allowed to use its Docker socket). :mod:`hydra_sandbox.docker_ssh` carries the API.

TLS files (PEM) come from ``HYDRA_DOCKER_TLS_DIR``: ``ca.pem`` (the CA that signed the engine's server
certificate), ``cert.pem`` and ``key.pem`` (the client certificate the engine's ``--tlscacert`` trusts).
With several TCP engines, a subdirectory named ``HOST_PORT`` (``build1.lan_2376``) holds the files of
that engine; engines without one use the files at the top of the directory.

This module is pure (no Docker, no network): :mod:`hydra_sandbox.sandbox.backends.docker.engines`
turns an :class:`EngineConfig` into a client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from hydra_sandbox.errors import ConfigError

HOST_VARIABLE = "HYDRA_DOCKER_HOST"
TLS_VARIABLE = "HYDRA_DOCKER_TLS_DIR"
SSH_CONFIG_VARIABLE = "HYDRA_DOCKER_SSH_CONFIG"
TLS_PORT = 2376
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
Scheme = Literal["unix", "tcp", "ssh"]
_VALID = "unix:///path/docker.sock, tcp://HOST:PORT (with TLS) or ssh://[USER@]HOST[:PORT]"


class TlsFiles(BaseModel):
    """The client side of mutual TLS with one engine."""

    model_config = ConfigDict(frozen=True)

    ca: Path
    cert: Path
    key: Path


class EngineConfig(BaseModel):
    """One Docker engine Hydra may use: its URL as docker-py takes it, and TLS files for ``tcp``."""

    model_config = ConfigDict(frozen=True)

    url: str
    scheme: Scheme
    host: str
    port: int | None = None
    user: str | None = None
    tls: TlsFiles | None = None
    ssh_config: Path | None = None

    @property
    def remote(self) -> bool:
        """Whether its containers may live on another machine (they then cannot see Hydra's paths)."""
        return self.scheme != "unix"

    @property
    def tls_subdir(self) -> str:
        """The subdirectory of ``HYDRA_DOCKER_TLS_DIR`` that holds this engine's own TLS files."""
        return f"{self.host}_{self.port}"


def _bad(entry: str, what: str) -> ConfigError:
    return ConfigError(f"{HOST_VARIABLE}: {entry!r} {what}", hint=f"use {_VALID}; separate several with commas")


def _parse_one(entry: str) -> EngineConfig:
    parts = urlsplit(entry)
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise _bad(entry, "is not a unix:// URL with an absolute socket path (three slashes)")
        return EngineConfig(url=f"unix://{parts.path}", scheme="unix", host=parts.path)
    if parts.scheme not in {"tcp", "ssh"}:
        raise _bad(entry, "has no scheme Hydra accepts")
    try:
        port = parts.port
    except ValueError:
        raise _bad(entry, "has a port that is not a number from 1 to 65535") from None
    if not parts.hostname or parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise _bad(entry, "must name a host and nothing else (no path, query or fragment)")
    if parts.scheme == "ssh":
        if parts.password is not None:
            hidden = entry.replace(f":{parts.password}@", ":***@", 1)
            raise _bad(hidden, "holds a password, which Hydra never sends: authorise a key on the engine's machine")
        if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
            raise _bad(entry, "has a host or user name starting with '-', which ssh would read as an option")
        return EngineConfig(url=entry.rstrip("/"), scheme="ssh", host=parts.hostname, port=port, user=parts.username)
    if parts.username is not None:
        raise _bad(entry, "has a user name, which only ssh:// takes")
    port = port or TLS_PORT
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return EngineConfig(url=f"tcp://{host}:{port}", scheme="tcp", host=parts.hostname, port=port)


def parse_docker_hosts(value: str) -> list[EngineConfig]:
    """The engines ``value`` (the setting's text) names, in order; refused with what is valid when an
    entry is not a URL Hydra accepts or an engine is listed twice. TLS files are not looked at yet."""
    entries = [entry.strip() for entry in value.split(",")]
    if not any(entries):
        return []
    engines: list[EngineConfig] = []
    for entry in entries:
        if not entry:
            raise _bad(value, "has an empty entry between commas")
        engine = _parse_one(entry)
        if any(seen.url == engine.url for seen in engines):
            raise _bad(entry, "is listed twice")
        engines.append(engine)
    return engines


def _tls_files(engine: EngineConfig, tls_dir: Path | None) -> TlsFiles:
    if tls_dir is None:
        raise ConfigError(
            f"{HOST_VARIABLE}: {engine.url} is reached over TCP, which Hydra uses only with mutual TLS, "
            f"and {TLS_VARIABLE} is not set",
            hint=f"set {TLS_VARIABLE} to a directory holding {', '.join(TLS_FILES)}, or reach the engine "
            "through ssh://",
        )
    own = tls_dir / engine.tls_subdir
    folder = own if own.is_dir() else tls_dir
    missing = [name for name in TLS_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{TLS_VARIABLE}: {folder} lacks {', '.join(missing)} for {engine.url}",
            hint=f"put {', '.join(TLS_FILES)} (PEM) there, or in the subdirectory {engine.tls_subdir}/ for this "
            "engine alone",
        )
    return TlsFiles(ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem")


def _ssh_config_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ConfigError(
            f"{SSH_CONFIG_VARIABLE}: {value} is not a file",
            hint="point it at an OpenSSH client configuration file (what `ssh -F` reads), or unset it to use "
            "~/.ssh/config",
        )
    return value


def resolve_engines(value: str | None, tls_dir: Path | None, ssh_config: Path | None = None) -> list[EngineConfig]:
    """The engines of the settings with their TLS files found (``tcp://``) or their ssh configuration file
    (``ssh://``, when ``HYDRA_DOCKER_SSH_CONFIG`` is set); empty when ``value`` is unset (the engine of
    ``DOCKER_HOST`` and friends, as the Docker CLI would use)."""
    engines = parse_docker_hosts(value or "")
    resolved = []
    for engine in engines:
        if engine.scheme == "tcp":
            engine = engine.model_copy(update={"tls": _tls_files(engine, tls_dir)})
        elif engine.scheme == "ssh":
            engine = engine.model_copy(update={"ssh_config": _ssh_config_file(ssh_config)})
        resolved.append(engine)
    return resolved
