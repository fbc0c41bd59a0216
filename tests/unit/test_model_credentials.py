"""Which model key the gateway adds, from which source, and what ``hydra doctor`` says about it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from hydra_sandbox.doctor import _model_key
from hydra_sandbox.model_credentials import codex_auth_file, describe_model_key, find_model_key
from hydra_sandbox.settings import HydraSettings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    for name in ("HYDRA_MODEL_API_KEY", "OPENAI_API_KEY", "HYDRA_MODEL_BASE_URL", "CODEX_HOME"):
        monkeypatch.delenv(name, raising=False)
    return HydraSettings(data_home=tmp_path / "data")


def auth(tmp_path: Path, data: object) -> dict[str, str]:
    (tmp_path / "codex").mkdir(exist_ok=True)
    (tmp_path / "codex" / "auth.json").write_text(json.dumps(data))
    return {"CODEX_HOME": str(tmp_path / "codex"), "HOME": str(tmp_path)}


SIGN_IN = {"OPENAI_API_KEY": None, "tokens": {"id_token": "eyJ.a.b", "access_token": "at-1", "refresh_token": "rt-1"}}


def test_sources_are_taken_in_order_hydra_setting_then_environment_then_codex_auth(
    settings: HydraSettings, tmp_path: Path
) -> None:
    env = auth(tmp_path, {"OPENAI_API_KEY": "sk-from-auth-json"})
    found = find_model_key(settings, env)
    assert found is not None and found.source == "codex auth.json"
    assert found.key.get_secret_value() == "sk-from-auth-json"
    assert found.where == str(tmp_path / "codex" / "auth.json")
    found = find_model_key(settings, {**env, "OPENAI_API_KEY": "sk-from-env"})
    assert found is not None and (found.source, found.key.get_secret_value()) == ("OPENAI_API_KEY", "sk-from-env")
    configured = settings.model_copy(update={"model_api_key": SecretStr("sk-from-hydra")})
    found = find_model_key(configured, {**env, "OPENAI_API_KEY": "sk-from-env"})
    assert found is not None and found.source == "HYDRA_MODEL_API_KEY"
    assert found.key.get_secret_value() == "sk-from-hydra"


def test_the_default_codex_home_is_under_home(tmp_path: Path) -> None:
    assert codex_auth_file({"HOME": str(tmp_path)}) == tmp_path / ".codex" / "auth.json"


def test_a_chatgpt_sign_in_is_refused_with_the_reason_and_never_used(settings: HydraSettings, tmp_path: Path) -> None:
    env = auth(tmp_path, SIGN_IN)
    assert find_model_key(settings, env) is None
    report = describe_model_key(settings, env)
    assert report.ok is False and "ChatGPT sign-in" in report.detail and "refresh token" in report.detail
    assert report.fix is not None and "HYDRA_MODEL_API_KEY" in report.fix
    assert "at-1" not in report.model_dump_json() and "rt-1" not in report.model_dump_json()


def test_a_sign_in_with_an_api_key_uses_the_key(settings: HydraSettings, tmp_path: Path) -> None:
    env = auth(tmp_path, {**SIGN_IN, "OPENAI_API_KEY": "sk-both"})
    found = find_model_key(settings, env)
    assert found is not None and found.key.get_secret_value() == "sk-both"


@pytest.mark.parametrize("content", ["not json", "[1]", json.dumps({"OPENAI_API_KEY": 5}), json.dumps({"x": 1})])
def test_an_unusable_auth_file_gives_no_key_and_doctor_names_the_file(
    settings: HydraSettings, tmp_path: Path, content: str
) -> None:
    (tmp_path / "codex").mkdir()
    (tmp_path / "codex" / "auth.json").write_text(content)
    env = {"CODEX_HOME": str(tmp_path / "codex")}
    assert find_model_key(settings, env) is None
    report = describe_model_key(settings, env)
    assert report.ok is False and str(tmp_path / "codex" / "auth.json") in report.detail


def test_doctor_names_the_source_but_never_the_key(settings: HydraSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-doctor-secret-1234567890")
    check = _model_key(HydraSettings(data_home=settings.data_home))  # settings read the environment once
    assert check.ok and "OPENAI_API_KEY" in check.detail and "sk-doctor" not in check.model_dump_json()


def test_a_local_model_without_a_key_is_fine(settings: HydraSettings, tmp_path: Path) -> None:
    local = settings.model_copy(update={"model_base_url": "http://127.0.0.1:8080/v1"})
    report = describe_model_key(local, {"CODEX_HOME": str(tmp_path / "none")})
    assert report.ok and "without a key" in report.detail
    assert describe_model_key(settings, {"CODEX_HOME": str(tmp_path / "none")}).ok is False
