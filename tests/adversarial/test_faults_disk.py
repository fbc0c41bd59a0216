"""The journal on a filesystem that really fills up (a 1 MiB tmpfs): a clear error that names the
file, no corruption, nothing recorded is lost, and recording resumes when space returns."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.journal import Journal
from tests.adversarial.results import record_result

pytestmark = [
    pytest.mark.adversarial,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)"),
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_journal_cleanly_and_it_resumes_when_space_returns(small_disk: Path) -> None:
    path = small_disk / "journal.sqlite3"
    journal = Journal(path)
    ref = SessionRef(session_id="s-full")
    recorded = 0
    with pytest.raises(StoreError) as failure:
        for i in range(10_000):
            journal.append(ref, EventDraft(type="command", text=f"event {i} " + "x" * 8000))
            recorded += 1
    message = str(failure.value)
    assert "disk full" in message and str(path) in message, message
    assert recorded > 10, "the disk filled before anything was recorded"
    with pytest.raises(StoreError):  # still full: the next write fails the same clear way
        journal.append(ref, EventDraft(type="note", text="y" * 8000))
    journal.close()

    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    reopened = Journal(path)
    events = reopened.events("s-full")
    assert [e.counter for e in events] == list(range(recorded)), "an acknowledged event was lost"

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    after = reopened.append(ref, EventDraft(type="note", text="space is back"))
    assert after.counter == recorded, "the counters have a gap after recovery"
    reopened.close()
    record_result(
        "faults_journal_disk_full",
        "appends of 8 KB events to a journal on a 1 MiB tmpfs until ENOSPC, then remount larger",
        cases=recorded + 2,
        result=f"held: clear 'disk full' error naming the file after {recorded} events, integrity ok, none lost",
    )
