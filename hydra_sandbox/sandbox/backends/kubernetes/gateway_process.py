"""What runs in a session's gateway pod: the shared gateway process
(:mod:`hydra_sandbox.sandbox.gateway_process`, the one a remote Docker engine's gateway container runs),
configured from the pod's environment and serving the model gateway on the pod's TCP port.

Only the configuration's source differs: the plan comes from ``HYDRA_GATEWAY_PLAN`` (JSON, no secret in
it) and the model key from ``HYDRA_GATEWAY_MODEL_KEY``, which the kubelet takes from the session's Secret
(:mod:`.gateway_manifests`). Everything else (the gateways, the TCP front, the numbered usage lines on
stdout that Hydra follows in the pod's log) is the shared process's.

Run as ``python -m hydra_sandbox.sandbox.backends.kubernetes.gateway_process``; it serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import GATEWAY_SOCKET_DIR, MODEL_KEY_ENV, PLAN_ENV
from hydra_sandbox.sandbox.egress import EGRESS_PORT, EgressPlan
from hydra_sandbox.sandbox.gateway_process import GatewayProcessConfig, run


def config_from_env(
    env: Mapping[str, str], *, socket_dir: Path = Path(GATEWAY_SOCKET_DIR), port: int = EGRESS_PORT
) -> GatewayProcessConfig:
    """The shared process's configuration from the pod's environment; a :class:`ConfigError` naming the
    variable when it is missing or wrong (never its value: the key is one)."""
    raw = env.get(PLAN_ENV)
    if not raw:
        raise ConfigError(f"{PLAN_ENV} is not set", hint="the gateway pod's manifest sets it to the session's plan")
    try:
        plan = EgressPlan.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{PLAN_ENV}: not an egress plan ({exc.error_count()} errors: {exc.errors()[0]['msg']})"
        ) from None
    if plan.relay != "gateway":
        raise ConfigError(f"{PLAN_ENV}: mode {plan.mode!r} has no gateway to serve")
    key = env.get(MODEL_KEY_ENV)
    return GatewayProcessConfig(
        plan=plan, model_key=SecretStr(key) if key else None, socket_dir=socket_dir, tcp_port=port
    )


class PodEnvironment(BaseSettings):
    """The two variables the gateway pod's manifest sets, read from the process environment (the pod's,
    not a Hydra server's: these are not Hydra settings)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    plan: str = Field(default="", validation_alias=PLAN_ENV)
    model_key: SecretStr | None = Field(default=None, validation_alias=MODEL_KEY_ENV)

    def as_mapping(self) -> dict[str, str]:
        env = {PLAN_ENV: self.plan}
        if self.model_key is not None:
            env[MODEL_KEY_ENV] = self.model_key.get_secret_value()
        return env


def main() -> None:
    """Serve the pod's plan until SIGTERM."""
    asyncio.run(run(config_from_env(PodEnvironment().as_mapping())))


if __name__ == "__main__":
    main()
