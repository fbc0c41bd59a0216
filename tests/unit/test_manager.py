"""AgentManager behaviour over a fake sandbox, with the real journal, masker and recorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hydra_sandbox.authority import OPERATOR, Agent
from hydra_sandbox.errors import (
    ApplyConflictError,
    ConfigError,
    HydraError,
    InvalidTransitionError,
    PolicyViolation,
    ProfileNotFoundError,
    WorkspaceError,
)
from hydra_sandbox.events import EventDraft
from hydra_sandbox.lifecycle import SessionStatus, check_transition
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnFlags, SpawnPolicy, SpawnRequest
from hydra_sandbox.policy import DirectoryPolicy, NetworkPolicy
from hydra_sandbox.sandbox import RunResult
from tests.fake_sandbox import FakeRun, FakeSandbox, command, message, ran_tests
from tests.manager_kit import apply_reviewed, finish, manager_over, wait_until

SECRET = "sk-proj-TESTSECRETabcdefghijklmnopqrstuvwxyz0123456789"

GATED_PROFILE = """
id: gated_coder
title: Gated coder
description: Its diff may only be applied after a passing code review.
persona: p
system_prompt: s
apply_requires:
  - name: review_passed
    profile_id: code_reviewer
    checklist_item: approved
"""


def build(tmp_path: Path, sandbox: FakeSandbox, max_concurrent: int = 4) -> AgentManager:
    user_profiles = tmp_path / "profiles"
    user_profiles.mkdir(exist_ok=True)
    (user_profiles / "gated_coder.yaml").write_text(GATED_PROFILE)
    return manager_over(
        tmp_path, sandbox, profile_dirs=[user_profiles], max_concurrent=max_concurrent, secrets=[SECRET]
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("print('hi')\n")
    return path


@pytest.fixture
def sandbox() -> FakeSandbox:
    return FakeSandbox()


@pytest.fixture
async def manager(tmp_path: Path, sandbox: FakeSandbox) -> AsyncIterator[AgentManager]:
    mgr = build(tmp_path, sandbox)
    await mgr.start()
    yield mgr
    await mgr.close()


async def test_spawn_returns_queued_session_at_once_and_runs_to_awaiting_approval(
    manager: AgentManager, workdir: Path
) -> None:
    result = await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt="fix it"), principal=OPERATOR)
    assert result.session["status"] == "queued"
    assert result.events[0].type == "status" and result.events[0].counter == 0
    session_id = result.session["session_id"]
    assert await finish(manager, session_id) == SessionStatus.AWAITING_APPROVAL
    events = await manager.events(session_id)
    assert [e.counter for e in events] == list(range(len(events)))
    transitions = [(e.data["from"], e.data["to"]) for e in events if e.type == "status" and "to" in e.data]
    assert transitions == [("queued", "starting"), ("starting", "running"), ("running", "awaiting_approval")]


def test_illegal_transitions_are_refused() -> None:
    with pytest.raises(InvalidTransitionError, match="cannot go from completed to running"):
        check_transition("s-1", SessionStatus.COMPLETED, SessionStatus.RUNNING)


async def test_concurrency_limit_holds_and_queue_is_fifo(tmp_path: Path, workdir: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.gate = asyncio.Event()
    manager = build(tmp_path, sandbox, max_concurrent=2)
    await manager.start()
    try:
        ids = [
            (
                await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt=f"t{i}"), principal=OPERATOR)
            ).session["session_id"]
            for i in range(6)
        ]
        await wait_until(lambda: len(sandbox.started) == 2)
        assert manager.queue_length() == 4
        counts = manager.status_counts()
        assert counts[SessionStatus.QUEUED] == 4
        assert counts[SessionStatus.STARTING] + counts[SessionStatus.RUNNING] == 2
        assert counts[SessionStatus.FAILED] == 0 and len(counts) == len(SessionStatus)
        sandbox.gate.set()
        for session_id in ids:
            await finish(manager, session_id)
        assert sandbox.max_active == 2
        assert sandbox.started == ids
    finally:
        await manager.close()


async def test_idempotency_key_returns_the_existing_session_even_in_a_burst(
    manager: AgentManager, workdir: Path
) -> None:
    request = SpawnRequest(working_dir=str(workdir), custom_prompt="once", idempotency_key="k-1")
    results = await asyncio.gather(*(manager.spawn(request, principal=OPERATOR) for _ in range(20)))
    assert len({r.session["session_id"] for r in results}) == 1
    assert sum(not r.reused for r in results) == 1
    assert len(manager.list_sessions(limit=100, principal=OPERATOR)) == 1


async def test_unknown_flag_and_unknown_profile_are_refused_clearly(manager: AgentManager, workdir: Path) -> None:
    with pytest.raises(Exception, match="gpu"):
        SpawnFlags.model_validate({"gpu": True})
    with pytest.raises(ProfileNotFoundError, match="available profiles: .*code_reviewer"):
        await manager.spawn(SpawnRequest(working_dir=str(workdir), profile_id="wizard"), principal=OPERATOR)
    with pytest.raises(ConfigError, match="working_dir: 'relative/path' is not an absolute path"):
        await manager.spawn(SpawnRequest(working_dir="relative/path"), principal=OPERATOR)


async def test_child_gets_a_narrower_policy_and_a_wider_one_is_refused(manager: AgentManager, workdir: Path) -> None:
    parent = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt="p"), principal=OPERATOR)
    ).session
    await finish(manager, parent["session_id"])
    child = await manager.spawn(
        SpawnRequest(
            working_dir=str(workdir),
            parent_session_id=parent["session_id"],
            relationship="subtask",
            policy=SpawnPolicy(
                directory=DirectoryPolicy(allow=["src/**"]),
                network=NetworkPolicy(mode="none"),
                resources={"memory_mb": 512},
            ),
        ),
        principal=OPERATOR,
    )
    record = manager.get(child.session["session_id"], principal=OPERATOR)
    assert record.depth == 1 and record.relationship == "subtask"
    assert record.policy.network.mode == "none" and record.policy.resources.memory_mb == 512
    assert not record.policy.matcher.is_visible("app.py")
    with pytest.raises(PolicyViolation, match="resources.memory_mb: 99999 is wider"):
        await manager.spawn(
            SpawnRequest(
                working_dir=str(workdir),
                parent_session_id=parent["session_id"],
                policy=SpawnPolicy(resources={"memory_mb": 99999}),
            ),
            principal=OPERATOR,
        )
    with pytest.raises(PolicyViolation, match="network.mode: 'allowlist' is wider"):
        await manager.spawn(
            SpawnRequest(
                working_dir=str(workdir),
                parent_session_id=parent["session_id"],
                policy=SpawnPolicy(network=NetworkPolicy(mode="allowlist", allow_domains=[])),
            ),
            principal=OPERATOR,
        )


async def test_delegation_depth_and_children_limits(manager: AgentManager, workdir: Path) -> None:
    root = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    level1 = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), parent_session_id=root), principal=OPERATOR)
    ).session
    level2 = (
        await manager.spawn(
            SpawnRequest(working_dir=str(workdir), parent_session_id=level1["session_id"]), principal=OPERATOR
        )
    ).session
    with pytest.raises(PolicyViolation, match="delegation.max_depth"):
        await manager.spawn(
            SpawnRequest(working_dir=str(workdir), parent_session_id=level2["session_id"]), principal=OPERATOR
        )
    for _ in range(3):
        await manager.spawn(SpawnRequest(working_dir=str(workdir), parent_session_id=root), principal=OPERATOR)
    with pytest.raises(PolicyViolation, match="delegation.max_children"):
        await manager.spawn(SpawnRequest(working_dir=str(workdir), parent_session_id=root), principal=OPERATOR)


async def test_agent_spawning_under_a_session_outside_its_subtree_is_told_which_field(
    manager: AgentManager, workdir: Path
) -> None:
    first = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    other = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    with pytest.raises(PolicyViolation, match=f"parent_session_id: session {other!r}: not visible to agent"):
        await manager.spawn(SpawnRequest(working_dir="/workspace", parent_session_id=other), Agent(session_id=first))


async def test_child_must_work_on_its_parents_workspace(manager: AgentManager, workdir: Path, tmp_path: Path) -> None:
    root = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    with pytest.raises(PolicyViolation, match="working_dir: a child works on its parent's workspace"):
        await manager.spawn(SpawnRequest(working_dir=str(tmp_path), parent_session_id=root), principal=OPERATOR)


async def test_apply_requires_a_passing_review_child(
    manager: AgentManager, sandbox: FakeSandbox, workdir: Path
) -> None:
    coder = (
        await manager.spawn(
            SpawnRequest(working_dir=str(workdir), profile_id="gated_coder", custom_prompt="code it"),
            principal=OPERATOR,
        )
    ).session["session_id"]
    await finish(manager, coder)
    with pytest.raises(PolicyViolation, match="apply refused by rule 'review_passed'"):
        await apply_reviewed(manager, coder)
    sandbox.script(
        "REJECT-ME",
        FakeRun(drafts=[message("VERDICT: REQUEST_CHANGES")], result=RunResult(status="completed"), changes=[]),
    )
    bad = (
        await manager.spawn(
            SpawnRequest(
                working_dir=str(workdir),
                profile_id="code_reviewer",
                custom_prompt="REJECT-ME",
                parent_session_id=coder,
            ),
            principal=OPERATOR,
        )
    ).session
    await finish(manager, bad["session_id"])
    with pytest.raises(PolicyViolation, match="review_passed"):
        await apply_reviewed(manager, coder)
    sandbox.script(
        "APPROVE-ME",
        FakeRun(
            drafts=[command("pytest -q", 0), message("VERDICT: APPROVE")],
            result=RunResult(status="completed"),
            changes=[],
        ),
    )
    good = (
        await manager.spawn(
            SpawnRequest(
                working_dir=str(workdir),
                profile_id="code_reviewer",
                custom_prompt="APPROVE-ME",
                parent_session_id=coder,
            ),
            principal=OPERATOR,
        )
    ).session
    assert await finish(manager, good["session_id"]) == SessionStatus.COMPLETED
    await apply_reviewed(manager, coder)
    assert sandbox.applied == [coder]
    assert manager.get(coder, principal=OPERATOR).status == SessionStatus.COMPLETED


async def test_reviewer_child_sees_its_parents_layer(
    manager: AgentManager, sandbox: FakeSandbox, workdir: Path
) -> None:
    coder = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await finish(manager, coder)
    child = (
        await manager.spawn(
            SpawnRequest(working_dir=str(workdir), profile_id="code_reviewer", parent_session_id=coder),
            principal=OPERATOR,
        )
    ).session["session_id"]
    await finish(manager, child)
    request = next(r for r in sandbox.requests if r.session_id == child)
    assert request.layer_sessions == [coder]
    assert request.read_only


async def test_apply_without_confirm_writes_nothing(manager: AgentManager, sandbox: FakeSandbox, workdir: Path) -> None:
    session_id = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await finish(manager, session_id)
    result = await manager.apply(session_id, confirm=False, principal=OPERATOR)
    assert result.applied is False and sandbox.applied == []
    assert manager.get(session_id, principal=OPERATOR).status == SessionStatus.AWAITING_APPROVAL


async def test_apply_needs_the_digest_of_the_reviewed_preview(
    manager: AgentManager, sandbox: FakeSandbox, workdir: Path
) -> None:
    session_id = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await finish(manager, session_id)
    with pytest.raises(WorkspaceError, match="digest: missing.*call get_diff, review it, and pass its digest"):
        await manager.apply(session_id, confirm=True, principal=OPERATOR)
    assert sandbox.applied == []
    digest = (await manager.diff(session_id, OPERATOR)).digest
    await manager.apply(session_id, True, OPERATOR, digest=digest)
    assert sandbox.apply_terms[-1][1] == digest and sandbox.applied == [session_id]


async def test_second_session_applying_the_same_file_gets_a_conflict(
    manager: AgentManager, sandbox: FakeSandbox, workdir: Path
) -> None:
    first = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt="a"), principal=OPERATOR)
    ).session["session_id"]
    second = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt="b"), principal=OPERATOR)
    ).session["session_id"]
    await finish(manager, first)
    await finish(manager, second)
    await apply_reviewed(manager, first)
    with pytest.raises(ApplyConflictError, match=f"applied by session {first}.*app.py"):
        await apply_reviewed(manager, second)
    await manager.discard(second, principal=OPERATOR)
    assert sandbox.discarded == [second]
    with pytest.raises(WorkspaceError, match="already discarded"):
        await apply_reviewed(manager, second)


async def test_read_only_profile_completes_and_has_nothing_to_apply(manager: AgentManager, workdir: Path) -> None:
    session_id = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), profile_id="code_reviewer"), principal=OPERATOR)
    ).session["session_id"]
    assert await finish(manager, session_id) == SessionStatus.COMPLETED
    assert manager.get(session_id, principal=OPERATOR).policy.name == "read_only"
    with pytest.raises(PolicyViolation, match="read-only profile"):
        await apply_reviewed(manager, session_id)


async def test_terminate_running_and_queued_sessions(tmp_path: Path, workdir: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.gate = asyncio.Event()
    manager = build(tmp_path, sandbox, max_concurrent=1)
    await manager.start()
    try:
        running = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session[
            "session_id"
        ]
        queued = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
        await wait_until(lambda: manager.get(running, principal=OPERATOR).status == SessionStatus.RUNNING)
        await manager.terminate(queued, "not needed", principal=OPERATOR)
        await manager.terminate(running, "taking too long", principal=OPERATOR)
        assert await finish(manager, running) == SessionStatus.CANCELLED
        assert manager.get(queued, principal=OPERATOR).status == SessionStatus.CANCELLED
        with pytest.raises(ConfigError, match="already cancelled"):
            await manager.terminate(running, "again", principal=OPERATOR)
    finally:
        await manager.close()


async def test_checklist_is_marked_by_the_event_that_proves_it(
    manager: AgentManager, sandbox: FakeSandbox, workdir: Path
) -> None:
    sandbox.script("FAILING", FakeRun(drafts=[command("pytest", 1), ran_tests(False)]))
    failing = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt="FAILING"), principal=OPERATOR)
    ).session["session_id"]
    passing = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await finish(manager, failing)
    await finish(manager, passing)
    assert not manager.recorder.checklist(failing).is_done("tests_passed")
    checklist = manager.recorder.checklist(passing)
    assert checklist.is_done("tests_passed")
    proof = [e for e in await manager.events(passing) if e.type == "checklist" and e.data["item"] == "tests_passed"]
    assert proof and manager.journal.events(passing)[0].session_id == passing
    proving_event = next(e for e in await manager.events(passing) if e.id == proof[0].data["proved_by"])
    assert proving_event.type == "test"


async def test_known_secret_never_reaches_the_journal(
    manager: AgentManager, sandbox: FakeSandbox, workdir: Path
) -> None:
    sandbox.script("LEAKY", FakeRun(drafts=[command(f"echo {SECRET}", 0, f"key={SECRET}")]))
    session_id = (
        await manager.spawn(SpawnRequest(working_dir=str(workdir), custom_prompt="LEAKY"), principal=OPERATOR)
    ).session["session_id"]
    await finish(manager, session_id)
    dumped = "".join(e.model_dump_json() for e in await manager.events(session_id))
    assert SECRET not in dumped
    assert "[MASKED:" in dumped


async def test_resume_runs_the_same_thread_again(manager: AgentManager, sandbox: FakeSandbox, workdir: Path) -> None:
    session_id = (await manager.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await finish(manager, session_id)
    await manager.discard(session_id, principal=OPERATOR)
    await manager.resume(session_id, "now also add docs", principal=OPERATOR)
    await wait_until(lambda: len([r for r in sandbox.requests if r.session_id == session_id]) == 2)
    await finish(manager, session_id)
    second = [r for r in sandbox.requests if r.session_id == session_id][1]
    assert second.resume_thread_id == f"thread-{session_id}"
    assert second.prompt == "now also add docs" and second.run_index == 1


async def test_restart_reattaches_running_sessions_without_duplicates(tmp_path: Path, workdir: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.gate = asyncio.Event()
    first = build(tmp_path, sandbox)
    await first.start()
    alive = (await first.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    vanished = (await first.spawn(SpawnRequest(working_dir=str(workdir)), principal=OPERATOR)).session["session_id"]
    await wait_until(
        lambda: (
            first.get(alive, principal=OPERATOR).status == SessionStatus.RUNNING
            and first.get(vanished, principal=OPERATOR).status == SessionStatus.RUNNING
        )
    )
    await wait_until(lambda: len(first.journal.events(alive)) >= 6)
    before = [(e.id, e.type, e.text) for e in await first.events(alive)]
    await first.close()  # the server dies; containers keep running
    first.journal.close()

    sandbox2 = FakeSandbox()
    sandbox2.live = {alive}
    second = build(tmp_path, sandbox2)
    await second.start()
    try:
        assert await finish(second, alive) == SessionStatus.AWAITING_APPROVAL
        assert second.get(vanished, principal=OPERATOR).status == SessionStatus.FAILED
        assert "vanished" in (second.get(vanished, principal=OPERATOR).reason or "")
        after = await second.events(alive)
        assert [(e.id, e.type, e.text) for e in after[: len(before)]] == before
        agent_events = [e for e in after if "seq" in e.data]
        seqs = [e.data["seq"] for e in agent_events]
        assert len(seqs) == len(set(seqs)), "a replayed agent event was recorded twice"
        assert [e.counter for e in after] == list(range(len(after)))
        assert sandbox2.follow_calls and sandbox2.follow_calls[0][1] >= 1
    finally:
        await second.close()


async def test_host_notes_are_recorded_without_a_session(manager: AgentManager) -> None:
    event = await manager.log_context(f"decided to use sqlite; key {SECRET}", None, ["decision"], principal=OPERATOR)
    assert event.session_id == "host" and event.tags == ["decision"]
    assert SECRET not in event.text
    draft = EventDraft(type="note", text="x")
    assert draft.type == "note"


async def test_a_host_note_that_states_a_decision_is_a_decision_event(manager: AgentManager) -> None:
    note = "Decision: use RE2 for globs\nbecause Python's re backtracks"
    event = await manager.log_context(note, None, ["globs"], principal=OPERATOR)
    assert (event.type, event.text, event.tags) == ("decision", note, ["globs"])
    assert event.data["decisions"] == ["use RE2 for globs"] and event.data["source"] == "note"
    plain = await manager.log_context("remember to look at RE2 later", None, None, principal=OPERATOR)
    assert plain.type == "note"


async def test_refusals_quote_caller_values_short_and_on_one_line(manager: AgentManager, workdir: Path) -> None:
    huge = "A" * 100_000 + "\nsecond line"
    for call in (
        lambda: manager.get(huge, principal=OPERATOR),
        lambda: manager.list_sessions(status=huge, principal=OPERATOR),
    ):
        with pytest.raises(HydraError) as info:
            call()
        assert len(str(info.value)) < 300 and "\n" not in str(info.value)
    with pytest.raises(ProfileNotFoundError) as info:
        await manager.spawn(SpawnRequest(working_dir=str(workdir), profile_id=huge), principal=OPERATOR)
    assert "profile 'AAAA" in str(info.value) and len(str(info.value).splitlines()[0]) < 400
    with pytest.raises(PolicyViolation) as info:
        await manager.spawn(
            SpawnRequest(working_dir=str(workdir), policy=SpawnPolicy(resources={huge: 1})), principal=OPERATOR
        )
    assert "resources['AAAA" in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("working_dir", "reason"),
    [
        ("~hydra_no_such_user_zz/repo", "Could not determine home directory"),
        ("/" + "a" * 5000, "File name too long"),
    ],
)
async def test_a_path_the_os_refuses_is_a_config_error_naming_working_dir(
    manager: AgentManager, working_dir: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        await manager.spawn(SpawnRequest(working_dir=working_dir), principal=OPERATOR)
    assert str(info.value).startswith("working_dir: ") and reason in str(info.value)
