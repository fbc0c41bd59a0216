"""scripts/mutation's report: the sample it draws and the table it prints from mutmut's results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation_report.py"


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "MUTANTS", tmp_path / "mutants" / "hydra_sandbox")
    monkeypatch.setattr(module, "EQUIVALENTS", tmp_path / "equivalents.yaml")
    return module


def write_meta(report: ModuleType, path: str, codes: dict[str, int | None]) -> None:
    meta = report.MUTANTS / f"{path}.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}), encoding="utf-8")


def test_the_sample_is_the_same_every_time_and_per_module(report: ModuleType) -> None:
    write_meta(report, "policy.py", {f"hydra_sandbox.policy.x_f__mutmut_{i}": None for i in range(50)})
    write_meta(report, "masking/engine.py", {f"hydra_sandbox.masking.engine.x_g__mutmut_{i}": None for i in range(5)})
    write_meta(report, "masking/scanner.py", {"hydra_sandbox.masking.scanner.xǁScannerǁfeed__mutmut_1": None})
    first = report.sample(10, [])
    assert first == report.sample(10, [])
    assert sum(n.startswith("hydra_sandbox.policy.") for n in first) == 10
    assert sum(n.startswith("hydra_sandbox.masking.") for n in first) == 6  # the package is one module
    assert report.sample(3, ["masking"]) == [n for n in first if n.startswith("hydra_sandbox.masking.")][:3]


def test_sampling_an_unknown_module_names_the_modules_there_are(report: ModuleType) -> None:
    write_meta(report, "policy.py", {"hydra_sandbox.policy.x_f__mutmut_1": None})
    with pytest.raises(SystemExit, match=r"\['polcy'\].*\['policy'\]"):
        report.sample(5, ["polcy"])


def test_the_table_counts_timeouts_as_killed_and_listed_equivalents_apart(
    report: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: dict[str, int | None] = {f"hydra_sandbox.authority.x_a__mutmut_{i}": 1 for i in range(17)}
    codes["hydra_sandbox.authority.x_a__mutmut_17"] = -24  # timeout
    codes["hydra_sandbox.authority.x_a__mutmut_18"] = 0  # survived, listed below as equivalent
    codes["hydra_sandbox.authority.x_a__mutmut_19"] = 0  # survived
    codes["hydra_sandbox.authority.x_a__mutmut_20"] = None  # not in the sample: not counted
    write_meta(report, "authority.py", codes)
    report.EQUIVALENTS.write_text("hydra_sandbox.authority.x_a__mutmut_18: the cap can never be reached\n")
    assert report.table([], show_survivors=False) == 0  # 18 of 19 judged = 94.7%
    row = capsys.readouterr().out.splitlines()[2]
    assert row == "| authority | 20 | 17 | 1 | 1 | 0 | 1 | 94.7% |"


def test_a_module_below_ninety_percent_fails_and_a_stale_equivalent_is_named(
    report: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: dict[str, int | None] = {f"hydra_sandbox.diffing.x_d__mutmut_{i}": 1 for i in range(8)}
    codes |= {"hydra_sandbox.diffing.x_d__mutmut_8": 0, "hydra_sandbox.diffing.x_d__mutmut_9": 0}
    write_meta(report, "diffing.py", codes)
    report.EQUIVALENTS.write_text("hydra_sandbox.diffing.x_gone__mutmut_1: a reason\n")
    assert report.table([], show_survivors=False) == 1  # 8 of 10
    captured = capsys.readouterr()
    assert "| diffing | 10 | 8 | 0 | 2 | 0 | 0 | 80.0% |" in captured.out
    assert "x_gone__mutmut_1, which no longer exists" in captured.err


def test_an_equivalents_file_without_reasons_is_refused(report: ModuleType) -> None:
    write_meta(report, "policy.py", {"hydra_sandbox.policy.x_f__mutmut_1": 0})
    report.EQUIVALENTS.write_text("hydra_sandbox.policy.x_f__mutmut_1:\n")
    with pytest.raises(SystemExit, match="mutant name -> reason"):
        report.table([], show_survivors=False)
