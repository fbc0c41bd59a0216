"""What the adversarial scenarios share: where their records go (``.results/<name>.json``, which
``scripts/security_table.py`` turns into the table in docs/security.md) and the embedding model the
Chroma-backed scenarios use."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra_sandbox.settings import load_settings

RESULTS_DIR = Path(__file__).resolve().parent / ".results"


def record_result(scenario: str, tried: str, cases: int, result: str) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {"scenario": scenario, "tried": tried, "cases": cases, "result": result}
    (RESULTS_DIR / f"{scenario}.json").write_text(json.dumps(payload, indent=2) + "\n")


def scenario_recorder(module_file: str) -> Callable[[str], contextlib.AbstractContextManager[dict[str, Any]]]:
    """``with scenario(name) as counts:`` for one test module: the counts a scenario collects are
    written with its result (passed or failed) to ``.results/<module>.json``."""
    path = RESULTS_DIR / f"{Path(module_file).stem}.json"
    book: dict[str, Any] = {}

    @contextlib.contextmanager
    def scenario(name: str) -> Iterator[dict[str, Any]]:
        counts: dict[str, Any] = {}
        started = time.monotonic()
        result = "failed"
        try:
            yield counts
            result = "passed"
        finally:
            counts["seconds"] = round(time.monotonic() - started, 2)
            book[name] = {"scenario": name, "cases": counts, "result": result}
            RESULTS_DIR.mkdir(exist_ok=True)
            path.write_text(json.dumps(book, indent=2, sort_keys=True) + "\n")
            print(f"\n[{path.stem}] {name}: {result} {json.dumps(counts, sort_keys=True)}")

    return scenario


def model_dir() -> Path:
    """Where Hydra reads the embedding model (HYDRA_EMBEDDING_MODEL_DIR; `hydra embeddings install` puts it there)."""
    return load_settings().embedding_model_dir
