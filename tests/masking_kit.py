"""The normaliser's breakpoints as ``(i, d)`` pairs, one per run of removed sequences: from normalised
index ``i`` on, the original index is ``i + d`` (the view tests state expectations in)."""

from __future__ import annotations

from hydra_sandbox.masking.normalise import normalise


def normalised_pairs(text: str, *, invisible: bool | None = None) -> tuple[str, list[tuple[int, int]]]:
    norm, (kept, removed), _utf8 = normalise(text, invisible=invisible)
    return norm, list(dict(zip(kept, removed, strict=True)).items())
