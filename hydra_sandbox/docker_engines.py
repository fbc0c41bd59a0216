"""docker-py clients for the engines ``HYDRA_DOCKER_HOST`` names (:mod:`hydra_sandbox.docker_hosts`), for
the Docker backend's runtime and for the commands that talk to engines directly (``hydra images copy``,
``hydra doctor``).

A client of an engine named by URL trusts only what Hydra gives it. requests lets
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace the CA a client was given, and sends through the
environment's proxies: an engine's ``ca.pem`` would be ignored (its certificate then fails to verify, or
a proxy's CA is trusted for the Docker API). This client ignores the environment, from its first request
(the API version probe) on.
"""

from __future__ import annotations

from typing import Any

import docker
import docker.tls
from docker.constants import DEFAULT_DOCKER_API_VERSION

from hydra_sandbox.docker_hosts import EngineConfig
from hydra_sandbox.docker_ssh import diagnose, mount_ssh
from hydra_sandbox.errors import RuntimeUnavailableError

UNREACHABLE_HINT = (
    "start dockerd, or set HYDRA_DOCKER_HOST (and HYDRA_DOCKER_TLS_DIR) or DOCKER_HOST; "
    "`hydra doctor` checks each engine"
)


class _EngineApiClient(docker.APIClient):
    @property  # type: ignore[override]
    def trust_env(self) -> bool:
        return False

    @trust_env.setter
    def trust_env(self, _value: bool) -> None:
        """requests.Session sets it to True; the class keeps it False."""


class EngineClient(docker.DockerClient):
    """``docker.DockerClient(base_url=..., tls=...)`` without the environment's CA bundle or proxies."""

    def __init__(self, api: docker.APIClient | None = None, **kwargs: Any) -> None:
        self.api = api if api is not None else _EngineApiClient(**kwargs)


def _ssh_client(engine: EngineConfig, timeout: int) -> docker.DockerClient:
    """A client of an ``ssh://`` engine through Hydra's own ssh transport (:mod:`hydra_sandbox.docker_ssh`):
    made like a ``unix://`` one (so streams work alike) with a fixed version, so it does not connect before
    the transport is in place."""
    api = _EngineApiClient(base_url="unix:///nonexistent", version=DEFAULT_DOCKER_API_VERSION, timeout=timeout)
    mount_ssh(api, engine, timeout)
    return EngineClient(api)


def connect(engine: EngineConfig, *, timeout: int = 120) -> docker.DockerClient:
    """A connected client of ``engine``, or a :class:`~hydra_sandbox.errors.RuntimeUnavailableError` naming
    the engine and what failed (for ``ssh://``, why: the host key, the key, the far side's docker)."""
    try:
        if engine.scheme == "ssh":
            client = _ssh_client(engine, timeout)
        else:
            client = EngineClient(base_url=engine.url, tls=tls_config(engine) or False, timeout=timeout)
        client.ping()
    except Exception as exc:  # docker-py, requests, ssl and ssh fail in their own ways
        if engine.scheme == "ssh":
            raise diagnose(engine, exc) from None
        raise RuntimeUnavailableError(f"cannot reach {engine.url}: {exc}", hint=UNREACHABLE_HINT) from None
    return client


def tls_config(engine: EngineConfig) -> docker.tls.TLSConfig | None:
    """docker-py's TLS for ``engine``: the server verified against ``ca.pem``, ``cert.pem`` presented."""
    if engine.tls is None:
        return None
    return docker.tls.TLSConfig(
        client_cert=(str(engine.tls.cert), str(engine.tls.key)), ca_cert=str(engine.tls.ca), verify=True
    )


def engine_client(engine: EngineConfig | None, *, timeout: int = 120) -> docker.DockerClient:
    """A connected client of ``engine`` (``None``: the local one, from ``DOCKER_HOST`` and friends), or a
    :class:`~hydra_sandbox.errors.RuntimeUnavailableError` naming the engine and what failed."""
    if engine is not None:
        return connect(engine, timeout=timeout)
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # docker-py and requests fail in their own ways
        raise RuntimeUnavailableError(f"cannot reach the Docker daemon: {exc}", hint=UNREACHABLE_HINT) from None
    return client
