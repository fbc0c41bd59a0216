"""heap_scrub turns glibc's scrubbing on once, and says plainly where it cannot."""

from __future__ import annotations

import logging
import platform

import pytest

from hydra_sandbox import heap_scrub


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap_scrub, "_state", {})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap scrubbing is glibc's M_PERTURB")
def test_on_glibc_scrubbing_turns_on_once_and_stays_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert heap_scrub.scrub_heap() is True
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))  # not asked again
    assert heap_scrub.scrub_heap() is True


def test_without_glibc_it_answers_false_and_names_the_alternative(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    with caplog.at_level(logging.WARNING, logger="hydra_sandbox.heap_scrub"):
        assert heap_scrub.scrub_heap() is False
        assert heap_scrub.scrub_heap() is False
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "HYDRA_CHROMA_URL" in warnings[0] and "unmasked agent output" in warnings[0]
