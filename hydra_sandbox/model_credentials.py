"""Where the model API key comes from. It is read on the host only: the model gateway adds it to each
request, so no agent ever holds it (see :mod:`hydra_sandbox.model_gateway`).

Sources, first found wins: ``HYDRA_MODEL_API_KEY`` (Hydra's setting), ``OPENAI_API_KEY`` (the
environment of the Hydra server), and the API key in the operator's Codex ``auth.json``
(``$CODEX_HOME/auth.json``, by default ``~/.codex/auth.json``), as written by
``codex login --with-api-key``.

A ChatGPT sign-in in ``auth.json`` (``codex login`` with a ChatGPT plan) is **not** used, on purpose:

* its refresh token rotates: if Hydra refreshed the access token, the operator's own Codex, which shares
  the file, would be signed out (or the two would race to rewrite it);
* its tokens speak for the operator's whole ChatGPT account, not for one API project, and cannot be
  scoped, capped or revoked per delegated agent the way a project key can;
* the ChatGPT back end it would be sent to is not a published API: its paths and headers follow the
  Codex release that was signed in.

The gateway could hide those tokens from agents as it hides a key, but Hydra would then own a credential
it cannot refresh safely nor limit; so a sign-in without an API key is reported (``hydra doctor`` says so
and names the fix) instead of used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr

from hydra_sandbox.settings import HydraSettings

__all__ = ["KeyReport", "KeySource", "ModelKey", "codex_auth_file", "describe_model_key", "find_model_key"]

KeySource = Literal["HYDRA_MODEL_API_KEY", "OPENAI_API_KEY", "codex auth.json"]
MAX_AUTH_FILE = 1024 * 1024
CHATGPT_REFUSAL = (
    "{path} holds a ChatGPT sign-in, which Hydra does not use: its rotating refresh token belongs to your "
    "own Codex and it speaks for your whole ChatGPT account (see docs/network.md)"
)
KEY_HINT = "set HYDRA_MODEL_API_KEY (or OPENAI_API_KEY) for the Hydra server, or run `codex login --with-api-key`"


class ModelKey(BaseModel):
    """The key the gateway adds, and where it was found (``where`` never holds the key)."""

    source: KeySource
    where: str
    key: SecretStr


def codex_auth_file(environ: Mapping[str, str]) -> Path:
    home = environ.get("CODEX_HOME")
    return Path(home) / "auth.json" if home else Path(environ.get("HOME") or Path.home()) / ".codex" / "auth.json"


def _read_auth(path: Path) -> tuple[str | None, bool, str | None]:
    """(API key, has a ChatGPT sign-in, why the file could not be read) of a Codex ``auth.json``."""
    try:
        if path.stat().st_size > MAX_AUTH_FILE:
            return None, False, f"{path} is larger than {MAX_AUTH_FILE} bytes"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, False, None
    except (OSError, ValueError) as exc:
        return None, False, f"{path} cannot be read as JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, False, f"{path} is not a JSON object"
    key = data.get("OPENAI_API_KEY")
    signed_in = isinstance(data.get("tokens"), dict) and bool(data["tokens"])
    return (key.strip() if isinstance(key, str) and key.strip() else None), signed_in, None


def _environment(settings: HydraSettings) -> dict[str, str]:
    """OPENAI_API_KEY and CODEX_HOME as HydraSettings read them (settings.py is the one reader of the
    process environment); ``environ`` arguments replace this in tests."""
    env: dict[str, str] = {}
    if settings.openai_api_key is not None:
        env["OPENAI_API_KEY"] = settings.openai_api_key.get_secret_value()
    if settings.codex_home is not None:
        env["CODEX_HOME"] = str(settings.codex_home)
    return env


def find_model_key(settings: HydraSettings, environ: Mapping[str, str] | None = None) -> ModelKey | None:
    """The first key of the documented sources, or ``None`` (a local model server may need none)."""
    env = _environment(settings) if environ is None else environ
    if settings.model_api_key is not None and settings.model_api_key.get_secret_value().strip():
        return ModelKey(source="HYDRA_MODEL_API_KEY", where="Hydra settings", key=settings.model_api_key)
    if env.get("OPENAI_API_KEY", "").strip():
        return ModelKey(source="OPENAI_API_KEY", where="environment", key=SecretStr(env["OPENAI_API_KEY"].strip()))
    path = codex_auth_file(env)
    key, _signed_in, _problem = _read_auth(path)
    if key is not None:
        return ModelKey(source="codex auth.json", where=str(path), key=SecretStr(key))
    return None


class KeyReport(BaseModel):
    """For ``hydra doctor``: whether runs can authenticate, which source is used, what to do if not."""

    ok: bool
    detail: str
    fix: str | None = None


def describe_model_key(settings: HydraSettings, environ: Mapping[str, str] | None = None) -> KeyReport:
    """Which key source is in use (never the key itself), or why there is none."""
    env = _environment(settings) if environ is None else environ
    found = find_model_key(settings, env)
    if found is not None:
        return KeyReport(ok=True, detail=f"{found.source} ({found.where}); the gateway adds it, agents never see it")
    path = codex_auth_file(env)
    _key, signed_in, problem = _read_auth(path)
    local = settings.model_base_url is not None
    if signed_in:
        return KeyReport(ok=local, detail=CHATGPT_REFUSAL.format(path=path), fix=KEY_HINT)
    if problem:
        return KeyReport(ok=local, detail=f"no key: {problem}", fix=KEY_HINT)
    if local:
        return KeyReport(ok=True, detail=f"none; requests go to {settings.model_base_url} without a key")
    return KeyReport(ok=False, detail=f"no key in HYDRA_MODEL_API_KEY, OPENAI_API_KEY or {path}", fix=KEY_HINT)
