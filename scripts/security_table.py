#!/usr/bin/env python3
"""Print the adversarial results table (docs/security.md) from tests/adversarial/.results/*.json,
which the scenarios of `pytest -m adversarial` write when they run. Scenarios record in one of three
shapes: one scenario per file, several keyed by name, or the fuzz suite's list of scenarios."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "tests" / "adversarial" / ".results"
COUNT_KEYS = ("cases", "runs", "spawn_calls", "log_context_calls", "tool_and_resource_results", "examples")


def _cases(record: dict[str, Any]) -> int:
    value = record.get("cases")
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in COUNT_KEYS:
            if isinstance(value.get(key), int):
                return int(value[key])
    tried = record.get("tried")
    return len(tried) if isinstance(tried, list) else 0


def _tried(record: dict[str, Any]) -> str:
    tried = record.get("tried")
    if isinstance(tried, list):
        kinds = sorted({str(t).split(":", 1)[0] for t in tried})
        return f"{len(tried)} tricks, e.g. " + ", ".join(kinds[:6])
    if isinstance(tried, str):
        return tried
    cases = record.get("cases")
    if isinstance(cases, dict):
        return ", ".join(f"{k}={v}" for k, v in cases.items() if k != "seconds")
    return ""


def _rows(record: Any) -> Iterator[tuple[str, str, int, str]]:
    if isinstance(record, dict) and isinstance(record.get("scenarios"), list):
        for item in record["scenarios"]:
            if item.get("examples", 0) > 0:  # hypothesis scenarios; the others record themselves
                result = f"{item['outcome']}, {item['failures']} failing example(s)"
                yield item["scenario"], "hypothesis-generated arguments / files", int(item["examples"]), result
    elif isinstance(record, dict) and "scenario" in record:
        yield str(record["scenario"]), _tried(record), _cases(record), str(record.get("result", "?"))
    elif isinstance(record, dict):
        for value in record.values():
            yield from _rows(value)


def main() -> int:
    rows = [row for path in sorted(RESULTS.glob("*.json")) for row in _rows(json.loads(path.read_text()))]
    if not rows:
        print(f"no results in {RESULTS}: run `pytest -m adversarial` first", file=sys.stderr)
        return 1
    print("| scenario | what was tried | cases | result |")
    print("|---|---|---|---|")
    for scenario, tried, cases, result in rows:
        cells = [scenario, tried, str(cases), result]
        print("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    print(f"\n{len(rows)} scenarios, {sum(r[2] for r in rows):,} cases.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
