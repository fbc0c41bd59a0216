"""Each adversarial scenario records what it tried and how it ended in ``.results/<scenario>.json``;
``scripts/security_table.py`` turns them into the table in docs/security.md."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / ".results"


def record_result(scenario: str, tried: str, cases: int, result: str) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {"scenario": scenario, "tried": tried, "cases": cases, "result": result}
    (RESULTS_DIR / f"{scenario}.json").write_text(json.dumps(payload, indent=2) + "\n")
