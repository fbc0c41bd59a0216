from pathlib import Path

import pytest

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.settings import load_settings


def test_settings_read_hydra_prefixed_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HYDRA_MAX_CONCURRENT_AGENTS", "7")
    settings = load_settings()
    assert settings.data_home == tmp_path
    assert settings.max_concurrent_agents == 7
    assert settings.journal_path == tmp_path / "journal.sqlite3"
    assert settings.effective_chroma_path == tmp_path / "chroma"


def test_env_file_is_read_but_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "hydra.env"
    env_file.write_text("HYDRA_MODEL=from-file\nHYDRA_AGENT_IMAGE=img:file\n")
    monkeypatch.setenv("HYDRA_ENV_FILE", str(env_file))
    monkeypatch.setenv("HYDRA_MODEL", "from-env")
    settings = load_settings()
    assert settings.model == "from-env"
    assert settings.agent_image == "img:file"


def test_bad_value_names_the_variable_and_what_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_MAX_CONCURRENT_AGENTS", "zero")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "HYDRA_MAX_CONCURRENT_AGENTS" in str(info.value)
    assert "integer" in str(info.value)


def test_model_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_MODEL_BASE_URL", "127.0.0.1:8080")
    with pytest.raises(ConfigError, match=r"HYDRA_MODEL_BASE_URL.*http://"):
        load_settings()


def test_masked_dump_never_contains_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_MODEL_API_KEY", "sk-very-secret-value-123456")
    monkeypatch.setenv("HYDRA_SECRETS", '["another-secret-value"]')
    dumped = str(load_settings().masked_dump())
    assert "sk-very-secret" not in dumped
    assert "another-secret-value" not in dumped
    assert "********" in dumped


def test_user_directories_come_after_builtins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYDRA_PROFILES_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.profile_dirs[-1] == tmp_path
    assert settings.profile_dirs[0] == settings.builtin_profiles_dir


def test_importing_settings_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import hydra_sandbox.settings as module

    monkeypatch.setenv("HYDRA_MAX_CONCURRENT_AGENTS", "not-a-number")
    importlib.reload(module)  # would raise if the module validated settings at import time
