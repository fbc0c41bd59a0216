"""``hydra masking test|rules`` and the masking line of ``hydra doctor``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.doctor import _masking
from hydra_sandbox.settings import HydraSettings

KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk"
RULE = """rules:
  - id: acme-token
    pattern: 'acme_[a-z0-9]{24}'
    keywords: [acme_]
"""


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text(f"start\nOPENAI_API_KEY={KEY}\ntoken = get_token()\nacme_0123456789abcdefghijklmn\n")
    return path


def test_masking_test_names_the_rule_and_line_without_printing_the_secret(sample: Path) -> None:
    result = CliRunner().invoke(app, ["masking", "test", str(sample), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(f["line"], f["rule"]) for f in report["findings"]] == [(2, "openai-key")]
    assert KEY not in result.output and "OPENAI_API_KEY=[MASKED:openai-key]" in result.output


def test_masking_test_uses_operator_rules_from_a_directory(sample: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "acme.yaml").write_text(RULE)
    result = CliRunner().invoke(app, ["masking", "test", str(sample), "--rules", str(rules), "--json"])
    assert result.exit_code == 0, result.output
    assert [f["rule"] for f in json.loads(result.output)["findings"]] == ["openai-key", "acme-token"]


def test_masking_test_refuses_a_broken_rule_file_naming_it(sample: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("rules:\n  - id: x\n    pattern: 'a+'\n")
    result = CliRunner().invoke(app, ["masking", "test", str(sample), "--rules", str(tmp_path)])
    assert result.exit_code != 0
    assert "broken.yaml" in str(result.exception) and "bound every repeat" in str(result.exception)


def test_masking_rules_lists_every_rule_in_order() -> None:
    result = CliRunner().invoke(app, ["masking", "rules", "--json"])
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in json.loads(result.output)]
    assert ids[0] == "private-key" and ids[-1] == "secret-assignment" and len(ids) >= 40


def test_doctor_reports_the_masking_engine(tmp_path: Path) -> None:
    check = _masking(HydraSettings(data_home=tmp_path))
    assert check.ok and "hyperscan" in check.detail


def test_doctor_says_when_masking_runs_on_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hydra_sandbox.masking.hyperscan_available", lambda: False)
    check = _masking(HydraSettings(data_home=tmp_path))
    assert check.ok and "fallback" in check.detail and check.fix == "pip install hyperscan"


def test_doctor_fails_on_a_broken_operator_rule_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("rules: nope\n")
    check = _masking(HydraSettings(data_home=tmp_path, masking_rules_dir=tmp_path))
    assert not check.ok and "bad.yaml" in check.detail
