"""Leaks found by tests/adversarial/test_secrets_whole_path.py, each pinned by a focused test."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.events import EventDraft
from hydra_sandbox.journal import Journal
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox import RunResult
from hydra_sandbox.sandbox.pipeline import OutputPipeline
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from hydra_sandbox.settings import load_settings
from tests.fake_sandbox import FakeRun, FakeSandbox

KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumge8\n-----END RSA PRIVATE KEY-----"
BODY = "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumge8"


def test_a_private_key_in_a_file_is_masked_in_the_diff(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "s" / "upper"
    lower.mkdir()
    upper.mkdir(parents=True)
    (upper / "id.txt").write_text(f"before\n{KEY}\nafter\n")
    ws = StagedWorkspace(
        session_id="s-1",
        source=lower,
        lowers=[lower],
        upper=upper,
        work=tmp_path / "s" / "work",
        volume_name="v",
        mode="copy",
        agent_uid=0,
        agent_gid=0,
        started_at_ns=time.time_ns(),
    )
    policy = PolicyCatalog(load_settings().policy_dirs).get("default")
    preview = compute_diff(ws, policy, mask=SecretMasker().mask)
    assert BODY not in preview.unified and "[MASKED:private-key]" in preview.unified
    assert "+after" in preview.unified


async def test_a_private_key_printed_raw_on_stdout_is_masked() -> None:
    drafts: list[EventDraft] = []

    async def sink(draft: EventDraft) -> None:
        drafts.append(draft)

    masker = SecretMasker()
    pipeline = OutputPipeline(masker, CodexEventParser([], masker.mask), sink)
    await pipeline.feed("stdout", f'{{"type":"turn.started"}}\nnot json {KEY}\n{{"type":"turn.started"}}\n'.encode())
    await pipeline.close()
    blob = str([d.model_dump() for d in drafts])
    assert BODY not in blob and "[MASKED:private-key]" in blob
    assert [d.text for d in drafts].count("turn started") == 2


async def test_a_failed_runs_reason_is_masked_in_the_session_record(tmp_path: Path) -> None:
    secret = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk"
    settings = load_settings(data_home=tmp_path / "data")
    journal = Journal(tmp_path / "journal.sqlite3")
    sandbox = FakeSandbox()
    sandbox.script("FAIL", FakeRun(result=RunResult(status="failed", reason=f"exited: {secret}")))
    manager = AgentManager(
        sandbox=sandbox,
        recorder=Recorder(journal, SecretMasker()),
        profiles=ProfileCatalog(settings.profile_dirs),
        policies=PolicyCatalog(settings.policy_dirs),
        default_model="m",
        max_concurrent=1,
    )
    await manager.start()
    try:
        session_id = (
            await manager.spawn(SpawnRequest(working_dir=str(tmp_path), custom_prompt="FAIL"), principal=OPERATOR)
        ).session["session_id"]
        record = await manager.wait(session_id, 10, principal=OPERATOR)
        assert record.status == SessionStatus.FAILED
        assert secret not in (record.reason or "") and "[MASKED:openai-key]" in (record.reason or "")
        assert secret not in str(journal.load_session(session_id))
    finally:
        await manager.close()
        await asyncio.sleep(0)
        journal.close()
