import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hydra_sandbox
from hydra_sandbox.cli import app
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.settings import BUILTIN_DIR, REPO_ROOT, HydraSettings, load_settings


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


# -- every setting in HydraSettings ---------------------------------------------------------------

PACKAGE = Path(hydra_sandbox.__file__).resolve().parent
_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(source: str) -> list[int]:
    """Lines of ``source`` that touch the process environment through ``os`` (not text that names it)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        via_os = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
        if (via_os and node.attr in _ENV_NAMES) or (  # type: ignore[attr-defined]
            isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & _ENV_NAMES
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "snippet",
    [
        "import os\nx = os.environ.get('HYDRA_X')",
        "import os\nx = os.environ['HYDRA_X']",
        "import os\nx = os.getenv('HYDRA_X')",
        "from os import environ\nx = environ['HYDRA_X']",
        "from os import getenv",
        "import os\nenv = dict(os.environ)",
    ],
)
def test_the_environment_detector_finds_each_way_of_reading(snippet: str) -> None:
    assert environment_reads(snippet)


def test_the_environment_detector_ignores_text_that_names_a_variable() -> None:
    assert environment_reads("hint = 'set HYDRA_X or read os.environ yourself'\n") == []


def test_only_settings_reads_the_environment() -> None:
    """A new ``os.environ``/``getenv`` anywhere else in the package is a setting outside HydraSettings."""
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py" or path.parent != PACKAGE
        if (lines := environment_reads(path.read_text()))
    }
    assert not found, f"read the environment outside settings.py (make it a HydraSettings field): {found}"


def test_config_show_lists_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert set(shown) == set(HydraSettings.model_fields)
    assert {"cache_dir", "images_dir", "runtime_dir", "log_level", "builtin_profiles_dir"} <= set(shown)


def test_variables_once_read_directly_are_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "HYDRA_CACHE_DIR": tmp_path / "cache",
        "HYDRA_IMAGES_DIR": tmp_path / "images",
        "HYDRA_BUILTIN_PROFILES_DIR": tmp_path / "profiles",
        "HYDRA_BUILTIN_POLICIES_DIR": tmp_path / "policies",
        "HYDRA_RUNTIME_DIR": tmp_path / "run",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("HYDRA_LOG_LEVEL", "info")
    settings = load_settings()
    for name, value in values.items():
        assert getattr(settings, name.removeprefix("HYDRA_").lower()) == value
    assert settings.log_level == "INFO"


def test_a_bad_log_level_names_the_variable_and_the_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError, match=r"HYDRA_LOG_LEVEL.*'DEBUG'"):
        load_settings()


def test_relay_sockets_live_in_the_runtime_dir_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hydra_sandbox.sandbox.egress import runtime_dir

    monkeypatch.setenv("HYDRA_RUNTIME_DIR", str(tmp_path / "run"))
    assert runtime_dir() == tmp_path / "run"
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
    assert runtime_dir(tmp_path / "given") == tmp_path / "given"


def test_builtins_are_package_data_and_the_checkout_links_to_them() -> None:
    settings = HydraSettings()
    for directory in (settings.builtin_profiles_dir, settings.builtin_policies_dir, settings.images_dir):
        assert directory.is_relative_to(PACKAGE / "builtin"), directory
    assert (settings.builtin_profiles_dir / "default.yaml").is_file()
    assert (settings.builtin_policies_dir / "default.yaml").is_file()
    assert (settings.images_dir / "agent" / "Dockerfile").is_file()
    assert (settings.images_dir / "chroma" / "Dockerfile").is_file()
    for name in ("profiles", "policies", "images"):  # one source of truth: the checkout's folders are links
        assert (REPO_ROOT / name).resolve() == (BUILTIN_DIR / name).resolve()
