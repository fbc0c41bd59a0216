"""Data at rest is private: the journal 0600 and its folder 0700 from creation whatever the umask, a
loose data home tightened, and copy mode never handing a root-only file to the agent's uid."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hydra_sandbox.journal import Journal
from hydra_sandbox.policy import Policy
from hydra_sandbox.private_data import exposed, private_dir
from hydra_sandbox.sandbox.workspace import FALLBACK_UID, prepare_layer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_journal_and_its_wal_are_0600_in_a_0700_folder_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        journal = Journal(tmp_path / "home" / "journal.sqlite3")
        journal.save_session("s-000000000001", status="queued", profile_id="dev", parent_session_id=None, data={})
        files = [journal.path, journal.path.with_name("journal.sqlite3-wal")]
        assert [oct(mode(f)) for f in files] == ["0o600", "0o600"]
        assert mode(tmp_path / "home") == 0o700
        journal.close()
    finally:
        os.umask(old)


def test_a_loose_data_home_is_tightened_and_a_foreign_parent_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    assert exposed([home]) == [f"{home} (0o755)"]
    private_dir(home)
    assert mode(home) == 0o700 and exposed([home]) == []
    os.chmod(tmp_path, 0o755)
    private_dir(tmp_path / "new" / "deeper")
    assert mode(tmp_path / "new" / "deeper") == 0o700 and mode(tmp_path) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="copy mode is for root-owned sources; needs root to create one")
def test_copy_mode_keeps_a_root_only_file_unreadable_to_the_agent(tmp_path: Path) -> None:
    source = tmp_path / "project"
    source.mkdir()
    os.chmod(source, 0o755)
    (source / "public.txt").write_text("hello\n")
    os.chmod(source / "public.txt", 0o644)
    (source / "root-only.txt").write_text("root's secret\n")
    os.chmod(source / "root-only.txt", 0o600)
    (source / "private").mkdir(mode=0o700)
    os.chmod(source / "private", 0o700)
    (source / "private" / "inner.txt").write_text("x\n")
    ws = prepare_layer("s-00000000000c", source, Policy(name="t"), tmp_path / "sessions", {})
    assert ws.mode == "copy"
    lower = ws.lowers[-1]
    assert (lower / "public.txt").stat().st_uid == FALLBACK_UID
    for rel, expected in (("root-only.txt", 0o600), ("private", 0o700)):
        st = (lower / rel).lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, expected), f"{rel} was handed to the agent's uid"
