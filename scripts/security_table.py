#!/usr/bin/env python3
"""Print the adversarial results table (docs/security.md) from tests/adversarial/.results/*.json,
which every scenario of `pytest -m adversarial` writes when it runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "tests" / "adversarial" / ".results"


def main() -> int:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        print(f"no results in {RESULTS}: run `pytest -m adversarial` first", file=sys.stderr)
        return 1
    print("| scenario | what was tried | cases | result |")
    print("|---|---|---|---|")
    for row in rows:
        cells = [row["scenario"], row["tried"], str(row["cases"]), row["result"]]
        print("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    print(f"\n{len(rows)} scenarios, {sum(int(r['cases']) for r in rows)} cases.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
