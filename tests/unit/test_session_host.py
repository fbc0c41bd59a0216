"""Where a session's agent runs: the sandbox says it when the container starts, the session record keeps
it (``host``), ``list_sessions``, the session view and ``hydra sessions list`` show it, and it survives a
restart; records written before it was kept still load."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.cli import app
from hydra_sandbox.journal import Journal
from hydra_sandbox.lifecycle import SessionRecord, SessionStatus
from hydra_sandbox.orchestration.spawning import SpawnRequest
from tests.fake_sandbox import FakeSandbox
from tests.manager_kit import finish, manager_over, wait_until

HOST = "unix:///run/engine-b/docker.sock"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("print('hi')\n")
    return path


async def test_the_host_is_recorded_shown_and_kept_across_a_restart(tmp_path: Path, workdir: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.host = HOST
    first = manager_over(tmp_path, sandbox)
    await first.start()
    try:
        spawned = await first.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)
        assert spawned.session["host"] is None  # queued: not placed yet
        session_id = spawned.session["session_id"]
        assert await finish(first, session_id) == SessionStatus.AWAITING_APPROVAL
        (listed,) = first.list_sessions(OPERATOR, limit=10)
        assert listed.public()["host"] == HOST
    finally:
        await first.close()
        first.journal.close()
    second = manager_over(tmp_path, FakeSandbox())
    await second.start()
    try:
        assert second.get(session_id, principal=OPERATOR).host == HOST
    finally:
        await second.close()


async def test_a_resume_asks_for_the_engine_of_the_last_run(tmp_path: Path, workdir: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.host = HOST
    manager = manager_over(tmp_path, sandbox)
    await manager.start()
    try:
        session_id = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session[
            "session_id"
        ]
        await finish(manager, session_id)
        assert sandbox.requests[0].host is None
        await manager.resume(session_id, "go on", OPERATOR)
        await finish(manager, session_id)
        assert sandbox.requests[-1].host == HOST
    finally:
        await manager.close()


def test_a_record_written_before_hosts_were_kept_loads_with_none(tmp_path: Path) -> None:
    old = {
        "session_id": "s-000000000001",
        "status": "completed",
        "profile_id": "coder",
        "policy": {"name": "default"},
        "prompt": "p",
        "working_dir": str(tmp_path),
        "model": "m",
    }
    record = SessionRecord.model_validate(old)
    assert record.host is None and record.public()["host"] is None


def test_hydra_sessions_list_shows_the_host_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    record = SessionRecord.model_validate(
        {
            "session_id": "s-000000000001",
            "status": "completed",
            "profile_id": "coder",
            "policy": {"name": "default"},
            "prompt": "p",
            "working_dir": str(tmp_path),
            "model": "m",
            "host": "[b]h[/b]",
        }
    )
    journal.save_session(
        record.session_id,
        status=record.status.value,
        profile_id=record.profile_id,
        parent_session_id=None,
        data=record.model_dump(mode="json"),
    )
    journal.close()
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    listed = CliRunner().invoke(app, ["sessions", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)[0]["host"] == "[b]h[/b]"
    table = CliRunner().invoke(app, ["sessions", "list"])
    assert table.exit_code == 0 and "host" in table.output and "[b]h[/b]" in table.output


async def test_a_restarted_server_re_attaches_a_running_session_whose_engine_does_not_answer(
    tmp_path: Path, workdir: Path
) -> None:
    sandbox = FakeSandbox()
    sandbox.host = HOST
    sandbox.gate = asyncio.Event()
    first = manager_over(tmp_path, sandbox)
    await first.start()
    session_id = (await first.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await wait_until(lambda: first.get(session_id, principal=OPERATOR).status == SessionStatus.RUNNING)
    await first.close()
    first.journal.close()
    restarted = FakeSandbox()
    restarted.unanswered = {HOST}  # its agent cannot be seen: not live, but not gone either
    second = manager_over(tmp_path, restarted)
    await second.start()
    try:
        assert await finish(second, session_id) == SessionStatus.AWAITING_APPROVAL
        assert [sid for sid, _skip in restarted.follow_calls] == [session_id]
    finally:
        await second.close()
