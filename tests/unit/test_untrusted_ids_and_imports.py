"""Untrusted input bounded: session ids of Hydra's form before they touch a path or a Docker name, and an
import that restores only finished sessions under this machine's own policies."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.errors import InvalidSessionIdError, StoreError
from hydra_sandbox.journal import Journal
from hydra_sandbox.maintenance import import_jsonl
from hydra_sandbox.policy import Policy, PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.workspace import LayerStore, prepare_layer
from hydra_sandbox.session_ids import check_session_id, session_path
from hydra_sandbox.settings import load_settings
from tests.fake_sandbox import FakeSandbox
from tests.manager_kit import manager_over

BAD_IDS = ["..", ".", "", "s-../../etc", "s-0123456789AB", "s-0123456789ab/..", "s-0123456789ab\n", "../s-0123456789ab"]
WIDE_POLICY = {
    "name": "default",
    "network": {"mode": "allowlist", "allow_domains": ["com", "net", "io"]},
    "resources": {"memory_mb": 262144},
}


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_that_are_not_hydras_never_become_paths(bad: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidSessionIdError, match="is not a Hydra session id"):
        check_session_id(bad, "session_id")
    with pytest.raises(InvalidSessionIdError):
        session_path(tmp_path, bad)
    with pytest.raises(InvalidSessionIdError):
        prepare_layer(bad, tmp_path, Policy(name="t"), tmp_path / "sessions", {})
    with pytest.raises(InvalidSessionIdError):
        LayerStore(tmp_path / "sessions").exists(bad)
    with pytest.raises(InvalidSessionIdError):
        HostSocketEgress(lambda: tmp_path / "run").socket_dir(bad)
    assert os.listdir(tmp_path) == []


def test_a_path_built_from_an_id_stays_under_its_root(tmp_path: Path) -> None:
    assert session_path(tmp_path, "s-0123456789ab", "upper") == tmp_path / "s-0123456789ab" / "upper"
    for part in ("..", ".", "", "a/../../b"):
        with pytest.raises(InvalidSessionIdError, match="would leave"):
            session_path(tmp_path, "s-0123456789ab", part)


def test_a_tampered_layer_record_pointing_elsewhere_is_refused(tmp_path: Path) -> None:
    sid = "s-0123456789ab"
    (tmp_path / sid).mkdir()
    record = {
        "session_id": sid, "source": "/", "lowers": ["/"], "upper": "/", "work": "/tmp", "volume_name": "v",
        "mode": "overlay", "agent_uid": 1, "agent_gid": 1, "started_at_ns": 0,
    }  # fmt: skip
    (tmp_path / sid / "workspace.json").write_text(json.dumps(record))
    with pytest.raises(Exception, match="not its own"):
        LayerStore(tmp_path).get(sid)


@pytest.mark.parametrize("bad", ["..", ".", "s-../x"])
async def test_the_manager_ignores_and_refuses_ids_that_are_not_hydras(bad: str, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "data" / "journal.sqlite3")
    data = {"session_id": bad, "status": "awaiting_approval", "policy": {"name": "default"}, "prompt": "p",
            "working_dir": str(tmp_path), "model": "m", "profile_id": "default"}  # fmt: skip
    journal.save_session(bad, status="awaiting_approval", profile_id="default", parent_session_id=None, data=data)
    journal.close()
    sandbox = FakeSandbox()
    manager = manager_over(tmp_path, sandbox)
    await manager.start()
    try:
        assert all(r.session_id != bad for r in manager.list_sessions(OPERATOR))
        with pytest.raises(InvalidSessionIdError):
            await manager.discard(bad, OPERATOR)
        assert sandbox.discarded == []
    finally:
        await manager.close()


def catalogs() -> dict[str, Any]:
    settings = load_settings()
    return {"policies": PolicyCatalog(settings.policy_dirs), "profiles": ProfileCatalog(settings.profile_dirs)}


def export_line(session_id: str, status: str, **data: Any) -> str:
    session = {
        "session_id": session_id, "status": status, "profile_id": "default", "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z", "policy": WIDE_POLICY, "working_dir": "/", "prompt": "p",
        "model": "m", "thread_id": "t-1", **data,
    }  # fmt: skip
    return json.dumps({"kind": "session", "session": session})


def event_line(session_id: str, counter: int = 0) -> str:
    event = {"id": f"{session_id}:{counter}", "session_id": session_id, "counter": counter, "type": "note",
             "text": "x", "timestamp": "2026-01-01T00:00:00Z"}  # fmt: skip
    return json.dumps({"kind": "event", "event": event})


def test_import_restores_only_finished_sessions_and_never_queues_a_run(tmp_path: Path) -> None:
    lines = [export_line(f"s-00000000000{i}", status) for i, status in enumerate(["queued", "running", "completed"])]
    lines += [event_line("s-000000000000"), event_line("s-000000000002")]
    (tmp_path / "e.jsonl").write_text("\n".join(lines) + "\n")
    with Journal(tmp_path / "j.sqlite3") as journal:
        report = import_jsonl(journal, tmp_path / "e.jsonl", **catalogs())
        assert (report.sessions_added, report.sessions_refused) == (1, 2)
        assert (report.events_added, report.events_refused) == (1, 1)
        assert "status 'queued': only finished sessions are imported" in report.refused[0]
        assert [s["session_id"] for s in journal.all_sessions()] == ["s-000000000002"]


def test_import_takes_the_policy_and_profile_of_that_name_from_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text(export_line("s-000000000001", "completed") + "\n")
    with Journal(tmp_path / "j.sqlite3") as journal:
        import_jsonl(journal, tmp_path / "e.jsonl", **catalogs())
        restored = journal.load_session("s-000000000001")
    assert restored is not None
    catalog_default = catalogs()["policies"].get("default")
    assert Policy.model_validate(restored["policy"]) == catalog_default
    assert "com" not in json.dumps(restored["policy"]) and restored["thread_id"] is None
    assert restored["profile"]["id"] == "default"


def test_import_refuses_a_policy_name_this_machine_does_not_have(tmp_path: Path) -> None:
    line = export_line("s-000000000001", "completed", policy={**WIDE_POLICY, "name": "anything-goes"})
    (tmp_path / "e.jsonl").write_text(line + "\n")
    with Journal(tmp_path / "j.sqlite3") as journal:
        report = import_jsonl(journal, tmp_path / "e.jsonl", **catalogs())
        assert report.sessions_refused == 1 and "'anything-goes' is not in this machine's catalog" in report.refused[0]
        assert journal.all_sessions() == []


@pytest.mark.parametrize("bad", ["..", ".", "", "s-1"])
def test_import_refuses_a_session_id_that_is_not_hydras(bad: str, tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text(export_line(bad, "completed") + "\n")
    with Journal(tmp_path / "j.sqlite3") as journal:
        with pytest.raises(StoreError, match="e.jsonl:1: not a valid Hydra export line.*session_id"):
            import_jsonl(journal, tmp_path / "e.jsonl", **catalogs())
        assert journal.all_sessions() == []
