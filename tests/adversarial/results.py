"""What the adversarial scenarios share: where their records go (``.results/<name>.json``, which
``scripts/security_table.py`` turns into the table in docs/security.md) and the embedding model the
Chroma-backed scenarios use."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra_sandbox.settings import REPO_ROOT

RESULTS_DIR = Path(__file__).resolve().parent / ".results"
SHARED_MODEL = REPO_ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2" / "onnx"


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
    """HYDRA_EMBEDDING_MODEL_DIR, else the shared offline copy beside the repository, else Chroma's cache."""
    configured = os.environ.get("HYDRA_EMBEDDING_MODEL_DIR")
    if configured:
        return Path(configured)
    return SHARED_MODEL if SHARED_MODEL.is_dir() else Path.home() / ".cache/chroma/onnx_models/all-MiniLM-L6-v2/onnx"
