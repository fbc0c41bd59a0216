"""A docker-py client for an engine named by URL that trusts only what Hydra gives it.

requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace the CA a client was given, and sends
through the environment's proxies: an engine's ``ca.pem`` would be ignored (its certificate then fails
to verify, or a proxy's CA is trusted for the Docker API). This client ignores the environment, from its
first request (the API version probe) on.
"""

from __future__ import annotations

from typing import Any

import docker


class _EngineApiClient(docker.APIClient):
    @property  # type: ignore[override]
    def trust_env(self) -> bool:
        return False

    @trust_env.setter
    def trust_env(self, _value: bool) -> None:
        """requests.Session sets it to True; the class keeps it False."""


class EngineClient(docker.DockerClient):
    """``docker.DockerClient(base_url=..., tls=...)`` without the environment's CA bundle or proxies."""

    def __init__(self, **kwargs: Any) -> None:
        self.api = _EngineApiClient(**kwargs)
