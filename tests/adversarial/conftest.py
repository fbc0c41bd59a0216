"""Adversarial suite: every test here is marked ``adversarial`` and counts its fuzz examples.

Hypothesis' own statistics are hard to read at the end of a run, so each property test bumps a
per-scenario counter (:func:`count_example`) and the session writes a small JSON summary to
``tests/adversarial/.results/fuzz.json`` (gitignored): scenario, examples run, failing examples,
pytest outcome and duration.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# CI runs the same examples every time (a red CI is then reproducible, never a roll of the dice);
# runs elsewhere explore new ones and remember failures in .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / ".results" / "fuzz.json"


@dataclass
class ScenarioCount:
    scenario: str
    examples: int = 0
    failures: int = 0
    outcome: str = "not run"
    seconds: float = 0.0


SCENARIOS: dict[str, ScenarioCount] = {}
"""Module-level counters, one per scenario (a test, or one parameter of a parametrised test)."""


@contextlib.contextmanager
def count_example(scenario: str) -> Iterator[None]:
    """Count one run of a property body; an exception (a falsified property) counts as a failure.

    Hypothesis re-runs failing examples while it shrinks them, so ``failures`` counts those runs too;
    any non-zero value means the property was falsified."""
    entry = SCENARIOS.setdefault(scenario, ScenarioCount(scenario))
    entry.examples += 1
    try:
        yield
    except BaseException:
        entry.failures += 1
        raise


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.adversarial)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    started = time.monotonic()
    try:
        return (yield)
    finally:
        _scenario_of(item).seconds += round(time.monotonic() - started, 3)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _scenario_of(item).outcome = report.outcome
    return report


def _scenario_of(item: pytest.Item) -> ScenarioCount:
    """Tests name their scenario after the test (and its parameter), e.g. ``tools[spawn_agent]``."""
    name = scenario_name(item.name)
    return SCENARIOS.setdefault(name, ScenarioCount(name))


def scenario_name(test_name: str) -> str:
    return test_name.removeprefix("test_fuzz_").removeprefix("test_")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ran = [s for s in SCENARIOS.values() if s.outcome != "not run" or s.examples]
    if not ran:
        return
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    # Runs of part of the suite (the Docker half, one file) update their scenarios and keep the rest.
    merged: dict[str, dict[str, object]] = {}
    if RESULTS_FILE.exists():
        try:
            merged = {str(s["scenario"]): s for s in json.loads(RESULTS_FILE.read_text()).get("scenarios", [])}
        except (ValueError, AttributeError, KeyError, TypeError):
            merged = {}
    merged |= {s.scenario: asdict(s) for s in ran}
    scenarios = [merged[name] for name in sorted(merged)]
    summary = {
        "scenarios": scenarios,
        "total_examples": sum(int(str(s.get("examples", 0))) for s in scenarios),
        "total_failures": sum(int(str(s.get("failures", 0))) for s in scenarios),
        "exit_status": int(exitstatus),
    }
    RESULTS_FILE.write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> str:
    """This test's scenario name in the summary, e.g. ``tool[spawn_agent]``."""
    return scenario_name(request.node.name)
