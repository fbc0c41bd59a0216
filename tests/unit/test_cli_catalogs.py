"""``hydra profiles`` and ``hydra policies``: the same list/show/validate code behind both, and usage
errors as one line with an exit code instead of a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hydra_sandbox.cli import app, main

BROKEN = {"profiles": "id: broken\ntitle: [unclosed\n", "policies": "name: broken\nnetwork: {mode: everywhere}\n"}
BUILTINS = {
    "profiles": {"default", "coder", "code_reviewer", "data_migration"},
    "policies": {"default", "offline", "read_only", "package_install"},
}


@pytest.fixture
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for kind in BUILTINS:
        (tmp_path / kind).mkdir()
        monkeypatch.setenv(f"HYDRA_{kind.upper()}_DIR", str(tmp_path / kind))
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


@pytest.mark.parametrize("kind", ["profiles", "policies"])
def test_list_json_shows_the_builtins(kind: str, user_dirs: Path) -> None:
    result = CliRunner().invoke(app, [kind, "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    key = "id" if kind == "profiles" else "name"
    assert {item[key] for item in listed[kind]} == BUILTINS[kind]
    assert listed["errors"] == {}


@pytest.mark.parametrize("kind", ["profiles", "policies"])
def test_a_broken_file_is_listed_with_its_error_and_exits_2(kind: str, user_dirs: Path) -> None:
    (user_dirs / kind / "broken.yaml").write_text(BROKEN[kind])
    result = CliRunner().invoke(app, [kind, "list"])
    assert result.exit_code == 2
    assert "broken" in result.output and "default" in result.output
    validated = CliRunner().invoke(app, [kind, "validate"])
    assert validated.exit_code == 2
    assert "ok default" in validated.output and "invalid broken" in validated.output


@pytest.mark.parametrize("kind", ["profiles", "policies"])
def test_validate_named_files(kind: str, user_dirs: Path) -> None:
    good = user_dirs / kind / "default.yaml"
    good.write_text((Path(__file__).resolve().parents[2] / kind / "default.yaml").read_text())
    bad = user_dirs / kind / "broken.yaml"
    bad.write_text(BROKEN[kind])
    assert CliRunner().invoke(app, [kind, "validate", str(good)]).exit_code == 0
    result = CliRunner().invoke(app, [kind, "validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"ok {good}" in result.output.replace("\n", "") and "invalid" in result.output


@pytest.mark.parametrize(
    ("kind", "name", "field"), [("profiles", "coder", "persona"), ("policies", "offline", "network")]
)
def test_show_prints_one_definition(kind: str, name: str, field: str, user_dirs: Path) -> None:
    shown = CliRunner().invoke(app, [kind, "show", name, "--json"])
    assert shown.exit_code == 0, shown.output
    assert field in json.loads(shown.output)
    assert CliRunner().invoke(app, [kind, "show", name]).exit_code == 0


@pytest.mark.parametrize("argv", [["profiles", "show"], ["policies", "bogus"], ["sessions", "show"]])
def test_usage_errors_are_one_message_and_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["hydra", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Error:" in err and "Traceback" not in err
