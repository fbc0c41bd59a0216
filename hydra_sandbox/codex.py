"""How Hydra starts Codex: the argv of ``codex exec`` (or ``exec resume``) with its configuration
given as ``-c key=value`` overrides, so nothing has to be written into the agent's ``CODEX_HOME``.

The prompt is always one argv element after ``--``: it can never become a flag, and no shell ever
sees it. Values in overrides are TOML-escaped.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

PROVIDER = "hydra"
SECRET_ENV_PATTERNS = ("*KEY*", "*SECRET*", "*TOKEN*", "*PASSWORD*", "*CREDENTIAL*")


class CodexInvocation(BaseModel):
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, int, float, list or dict of them (JSON string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def config_overrides(
    *, base_url: str | None, api_key_env: str | None, mcp_servers: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    # No key or token is in the container (the gateways add them outside); Codex still drops these
    # names from every command's environment, as a second line should anything secret-looking be set.
    hidden = sorted({*SECRET_ENV_PATTERNS, *([api_key_env] if api_key_env else [])})
    args: list[str] = ["-c", f"shell_environment_policy.exclude={toml_value(hidden)}"]
    if base_url:
        provider: dict[str, Any] = {"name": PROVIDER, "base_url": base_url, "wire_api": "responses"}
        if api_key_env:
            provider["env_key"] = api_key_env
        args += [
            "-c",
            f"model_provider={toml_value(PROVIDER)}",
            "-c",
            f"model_providers.{PROVIDER}={toml_value(provider)}",
        ]
    for name, server in (mcp_servers or {}).items():
        args += ["-c", f"mcp_servers.{name}={toml_value({**server, 'required': True})}"]
    return args


_COMMON = ["--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]


def build_invocation(
    prompt: str,
    *,
    model: str,
    resume_thread_id: str | None = None,
    workdir: str = "/workspace",
    base_url: str | None = None,
    api_key_env: str | None = None,
    codex_home: str = "/codex-home",
    mcp_servers: dict[str, dict[str, Any]] | None = None,
) -> CodexInvocation:
    """``codex exec --json ... -C WORKDIR -m MODEL -- PROMPT`` for a first run, or, given
    ``resume_thread_id``, ``codex exec resume --json ... -m MODEL THREAD -- PROMPT``, which continues the
    thread kept in the session's CODEX_HOME (in the directory the thread started in). The container is
    the sandbox, so Codex's own is off."""
    if resume_thread_id is None:
        head, thread = ["codex", "exec", *_COMMON, "-C", workdir], []
    else:
        head, thread = ["codex", "exec", "resume", *_COMMON], [resume_thread_id]
    overrides = config_overrides(base_url=base_url, api_key_env=api_key_env, mcp_servers=mcp_servers)
    argv = [*head, "-m", model, *overrides, *thread, "--", prompt]
    return CodexInvocation(argv=argv, env={"CODEX_HOME": codex_home})
