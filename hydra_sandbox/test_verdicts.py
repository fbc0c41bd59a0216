"""Test verdicts from what ran: the runner's own summary, the exit code only when there is none.

``pytest -q || true`` exits 0 while pytest prints ``1 failed``; ``pytest | tail`` exits with tail's
code. So a verdict is read from the summary a known runner prints (pytest, unittest, go test, cargo
test, jest, vitest, mocha, and make's own ``*** Error`` line around any of them), and the exit code
decides only when no summary is found. Any summary that reports a failure makes the run failed; a
summary that reports no test at all is not a pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["passed", "failed", "no_tests"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PYTEST = re.compile(
    r"^=*\s*(?P<body>no tests ran|\d+ [a-z]+(?:, \d+ [a-z]+)*) in [\d.]+s(?: \([\d:]+\))?\s*=*\s*$", re.MULTILINE
)
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$", re.MULTILINE)
_UNITTEST_END = re.compile(r"^(OK|FAILED|NO TESTS RAN)(?: \((?P<body>[^)]*)\))?\s*$", re.MULTILINE)
_GO_OK = re.compile(r"^ok\s+\S+\s+(?:[\d.]+s|\(cached\))", re.MULTILINE)
_GO_FAIL_PKG = re.compile(r"^FAIL\s+\S+(?:\s+[\d.]+s|\s+\[(?:build|setup) failed\])\s*$", re.MULTILINE)
_GO_NO_FILES = re.compile(r"^\?\s+\S+\s+\[no test files\]", re.MULTILINE)
_CARGO = re.compile(r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored", re.MULTILINE)
_CARGO_BUILD = re.compile(r"^error: could not compile `", re.MULTILINE)
_JEST_TESTS = re.compile(r"^Tests:\s+(?P<body>.*?),?\s*(\d+) total\s*$", re.MULTILINE)
_JEST_SUITES = re.compile(r"^Test Suites:\s+(?P<body>.*?),?\s*(\d+) total\s*$", re.MULTILINE)
_VITEST_TESTS = re.compile(r"^\s*Tests\s+(?P<body>\d+ [a-z]+(?: \| \d+ [a-z]+)*)\s+\((\d+)\)\s*$", re.MULTILINE)
_VITEST_FILES = re.compile(r"^\s*Test Files\s+(?P<body>\d+ [a-z]+(?: \| \d+ [a-z]+)*)\s+\((\d+)\)\s*$", re.MULTILINE)
_MOCHA_PASSING = re.compile(r"^\s+(\d+) passing \(", re.MULTILINE)
_MOCHA_FAILING = re.compile(r"^\s+(\d+) failing\s*$", re.MULTILINE)
_MAKE_ERROR = re.compile(r"^(?:g?make)(?:\[\d+\])?: \*\*\* .*Error \d+", re.MULTILINE)
_COUNT = re.compile(r"(\d+) ([a-z]+)")
_NAMES = {"error": "errors", "failures": "failed", "failure": "failed", "warning": "warnings", "passing": "passed"}


class Finding(BaseModel):
    """What one runner's summary says."""

    format: str
    failed: bool
    counts: dict[str, int] = Field(default_factory=dict)


class TestVerdict(BaseModel):
    """The verdict of one command that ran tests."""

    __test__ = False  # not a pytest test class

    verdict: Verdict
    source: Literal["summary", "exit_code"]
    formats: list[str] = Field(default_factory=list, description="The runners whose summaries were read.")
    counts: dict[str, int] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


def _counts(body: str, separator: str = ",") -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in body.split(separator):
        found = _COUNT.search(part.strip())
        if found:
            name = _NAMES.get(found.group(2), found.group(2))
            counts[name] = counts.get(name, 0) + int(found.group(1))
    return counts


def _pytest(text: str) -> Finding | None:
    matches = list(_PYTEST.finditer(text))
    if not matches:
        return None
    counts = {} if matches[-1]["body"] == "no tests ran" else _counts(matches[-1]["body"])
    return Finding(format="pytest", failed=bool(counts.get("failed") or counts.get("errors")), counts=counts)


def _unittest(text: str) -> Finding | None:
    ran = list(_UNITTEST_RAN.finditer(text))
    if not ran:
        return None
    end = _UNITTEST_END.search(text, ran[-1].end())
    counts = {"ran": int(ran[-1].group(1))}
    if end is not None and end["body"]:
        for key, _, value in (p.strip().partition("=") for p in end["body"].split(",")):
            if value.isdigit():
                counts[_NAMES.get(key, key)] = int(value)
    if end is not None and end.group(1) == "OK":
        counts["passed"] = counts["ran"] - counts.get("skipped", 0) - counts.get("expected failures", 0)
    failed = end is None or end.group(1) == "FAILED"
    return Finding(format="unittest", failed=failed, counts=counts)


def _go(text: str) -> Finding | None:
    ok, failed = len(_GO_OK.findall(text)), len(_GO_FAIL_PKG.findall(text))
    tests_failed = text.count("\n--- FAIL: ") + text.startswith("--- FAIL: ")
    if not ok and not failed and not tests_failed:
        return None if not _GO_NO_FILES.search(text) else Finding(format="go", failed=False)
    counts = {"packages_ok": ok, "packages_failed": failed}
    if tests_failed:
        counts["failed"] = tests_failed
    if ok and not failed and not tests_failed:
        counts["passed"] = ok
    return Finding(format="go", failed=bool(failed or tests_failed), counts=counts)


def _cargo(text: str) -> Finding | None:
    results = _CARGO.findall(text)
    build_failed = bool(_CARGO_BUILD.search(text))
    if not results and not build_failed:
        return None
    counts = {"passed": 0, "failed": 0, "ignored": 0}
    for _, passed, failed, ignored in results:
        counts["passed"] += int(passed)
        counts["failed"] += int(failed)
        counts["ignored"] += int(ignored)
    if build_failed:
        counts["errors"] = 1
    failed_run = build_failed or any(status == "FAILED" for status, *_ in results)
    return Finding(format="cargo", failed=failed_run, counts=counts)


def _jest(text: str) -> Finding | None:
    tests, suites = list(_JEST_TESTS.finditer(text)), list(_JEST_SUITES.finditer(text))
    if not tests and not suites:
        return None
    counts = _counts(tests[-1]["body"]) if tests else {}
    suites_failed = _counts(suites[-1]["body"]).get("failed", 0) if suites else 0
    if suites_failed:
        counts["suites_failed"] = suites_failed
    return Finding(format="jest", failed=bool(counts.get("failed") or suites_failed), counts=counts)


def _vitest(text: str) -> Finding | None:
    tests, files = list(_VITEST_TESTS.finditer(text)), list(_VITEST_FILES.finditer(text))
    if not tests and not files:
        return None
    counts = _counts(tests[-1]["body"], "|") if tests else {}
    files_failed = _counts(files[-1]["body"], "|").get("failed", 0) if files else 0
    if files_failed:
        counts["files_failed"] = files_failed
    return Finding(format="vitest", failed=bool(counts.get("failed") or files_failed), counts=counts)


def _mocha(text: str) -> Finding | None:
    passing, failing = _MOCHA_PASSING.findall(text), _MOCHA_FAILING.findall(text)
    if not passing and not failing:
        return None
    counts = {"passed": int(passing[-1]) if passing else 0, "failed": int(failing[-1]) if failing else 0}
    return Finding(format="mocha", failed=counts["failed"] > 0, counts=counts)


def _make(text: str) -> Finding | None:
    return Finding(format="make", failed=True, counts={"errors": 1}) if _MAKE_ERROR.search(text) else None


PARSERS: tuple[Callable[[str], Finding | None], ...] = (_pytest, _unittest, _go, _cargo, _jest, _vitest, _mocha, _make)


def read_summaries(output: str) -> list[Finding]:
    """Every known runner summary in ``output`` (ANSI colours removed), in parser order."""
    text = _ANSI.sub("", output).replace("\r\n", "\n")
    return [finding for parse in PARSERS if (finding := parse(text)) is not None]


def judge(output: str, exit_code: int | None) -> TestVerdict:
    """The verdict of a test command: from the runners' summaries, else from the exit code."""
    findings = read_summaries(output)
    if not findings:
        return TestVerdict(verdict="passed" if exit_code == 0 else "failed", source="exit_code")
    counts: dict[str, int] = {}
    for finding in findings:
        for key, value in finding.counts.items():
            counts[key] = counts.get(key, 0) + value
    formats = [f.format for f in findings]
    if any(f.failed for f in findings):
        verdict: Verdict = "failed"
    elif counts.get("passed", 0) > 0:
        verdict = "passed"
    else:
        verdict = "no_tests"
    return TestVerdict(verdict=verdict, source="summary", formats=formats, counts=counts)


def failure_reported(output: str) -> TestVerdict | None:
    """For a command that is not a known test runner: a failed verdict when its output carries a
    runner's failing summary (``./run-tests.sh`` wrapping pytest), else ``None``. A passing summary
    from such a command proves nothing, so it is not a verdict."""
    findings = [f for f in read_summaries(output) if f.format != "make"]
    if not any(f.failed for f in findings):
        return None
    verdict = judge(output, None)
    return verdict if verdict.verdict == "failed" else None
