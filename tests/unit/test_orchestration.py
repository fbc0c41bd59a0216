"""What a session keeps from the moment it is created, and what each principal may do to it:
the resolved profile is stored on the record (editing the file changes new sessions only), the
conflict ledger survives a restart, idempotency keys are per principal, and an agent never applies
or discards a diff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hydra_sandbox.authority import OPERATOR, Agent
from hydra_sandbox.errors import AccessDenied, ApplyConflictError, PolicyViolation
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnRequest, resolve_spawn
from hydra_sandbox.policy import Policy
from hydra_sandbox.profiles import Profile
from tests.fake_sandbox import FakeRun, FakeSandbox, command, message
from tests.manager_kit import apply_reviewed, finish, manager_over

PINNED = """
id: pinned_coder
title: Pinned coder
description: Its apply rule, checklist and test runners must stay as they were at spawn.
persona: p
system_prompt: s
test_runners: [tox]
checklist_template:
  - id: tox_ran
    description: ran tox
    rule: {kind: command_succeeded, pattern: "^tox"}
apply_requires:
  - name: review_passed
    profile_id: code_reviewer
    checklist_item: approved
"""
LOOSE = PINNED.split("apply_requires:")[0].replace("test_runners: [tox]", "test_runners: [make]")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    return path


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles"
    path.mkdir()
    (path / "pinned_coder.yaml").write_text(PINNED)
    return path


@pytest.fixture
async def manager(tmp_path: Path, profiles: Path) -> AsyncIterator[AgentManager]:
    manager = manager_over(tmp_path, FakeSandbox(), profile_dirs=[profiles])
    await manager.start()
    yield manager
    await manager.close()


async def spawn(manager: AgentManager, workdir: Path, principal: object = OPERATOR, **fields: object) -> str:
    request = SpawnRequest(working_dir=str(workdir), **fields)  # type: ignore[arg-type]
    return str((await manager.spawn(request, principal)).session["session_id"])  # type: ignore[arg-type]


async def test_editing_a_profile_file_changes_new_sessions_only(
    manager: AgentManager, tmp_path: Path, profiles: Path, workdir: Path
) -> None:
    assert isinstance(manager.sandbox, FakeSandbox)
    manager.sandbox.script("TOX", FakeRun(drafts=[command("tox -q", 0, "ok"), message("done")]))
    before = await spawn(manager, workdir, profile_id="pinned_coder", custom_prompt="TOX")
    await finish(manager, before)
    (profiles / "pinned_coder.yaml").write_text(LOOSE)  # the rule and runner are gone
    after = await spawn(manager, workdir, profile_id="pinned_coder", custom_prompt="TOX")
    await finish(manager, after)

    with pytest.raises(PolicyViolation, match="apply refused by rule 'review_passed'"):
        await apply_reviewed(manager, before)
    checklist = manager.recorder.checklist(before)
    assert checklist is not None and checklist.is_done("tox_ran")
    first_run = next(r for r in manager.sandbox.requests if r.session_id == before)
    assert first_run.test_runners == ["tox"]
    await manager.resume(before, "once more", OPERATOR)
    await finish(manager, before)
    resumed = [r for r in manager.sandbox.requests if r.session_id == before][-1]
    assert resumed.run_index == 1 and resumed.test_runners == ["tox"], "the resume re-read the profile file"
    assert next(r for r in manager.sandbox.requests if r.session_id == after).test_runners == ["make"]
    await apply_reviewed(manager, after)  # the new session has no rule

    await manager.close()
    restarted = manager_over(tmp_path, manager.sandbox, profile_dirs=[profiles])  # its layers outlive it
    await restarted.start()
    try:
        with pytest.raises(PolicyViolation, match="review_passed"):
            await apply_reviewed(restarted, before)
    finally:
        await restarted.close()


async def test_the_conflict_ledger_survives_a_restart(tmp_path: Path, workdir: Path) -> None:
    sandbox = FakeSandbox()  # the upper layers outlive the server
    first = manager_over(tmp_path, sandbox)
    await first.start()
    one = await spawn(first, workdir, custom_prompt="one")
    two = await spawn(first, workdir, custom_prompt="two")
    for session_id in (one, two):
        assert await finish(first, session_id) == SessionStatus.AWAITING_APPROVAL
    await apply_reviewed(first, one)
    await first.close()
    first.journal.close()

    second = manager_over(tmp_path, sandbox)
    await second.start()
    try:
        with pytest.raises(ApplyConflictError, match=f"applied by session {one} after this session started: app.py"):
            await apply_reviewed(second, two)
    finally:
        await second.close()


async def test_an_idempotency_key_names_one_session_per_principal(manager: AgentManager, workdir: Path) -> None:
    operators = await spawn(manager, workdir, idempotency_key="build-1")
    parent = Agent(session_id=operators)
    agents = await spawn(manager, workdir, parent, idempotency_key="build-1")
    assert agents != operators, "an agent's key returned the operator's session"
    assert await spawn(manager, workdir, idempotency_key="build-1") == operators
    assert await spawn(manager, workdir, parent, idempotency_key="build-1") == agents
    other = await spawn(manager, workdir, Agent(session_id=agents), idempotency_key="build-1")
    assert other not in {operators, agents}, "one agent's key returned another agent's session"
    assert manager.get(agents, OPERATOR).parent_session_id == operators


async def test_an_agent_never_applies_or_discards_even_its_own_diff(manager: AgentManager, workdir: Path) -> None:
    own = await spawn(manager, workdir)
    await finish(manager, own)
    child = await spawn(manager, workdir, Agent(session_id=own))
    await finish(manager, child)
    agent = Agent(session_id=own)
    for session_id in (own, child, "s-unknown"):
        with pytest.raises(AccessDenied, match=f"agent session {own} may not write"):
            await manager.apply(session_id, True, agent)
        with pytest.raises(AccessDenied, match=f"agent session {own} may not throw"):
            await manager.discard(session_id, agent)
    assert isinstance(manager.sandbox, FakeSandbox)
    assert manager.sandbox.applied == [] and manager.sandbox.discarded == []
    assert manager.get(own, OPERATOR).diff_state == "pending"
    assert (await manager.diff(child, agent)).files, "an agent may still read its child's diff"


def test_spawn_resolution_is_pure_and_stores_the_resolved_profile(tmp_path: Path) -> None:
    profile = Profile.model_validate(
        {"id": "p", "title": "t", "description": "d", "persona": "x", "system_prompt": "s", "goalset": ["one"]}
    )
    asked: list[str] = []

    def named_policy(name: str) -> Policy:
        asked.append(name)
        return Policy.model_validate({"name": name, "description": "test"})

    record = resolve_spawn(
        SpawnRequest(working_dir=str(tmp_path), goalset=["two"], idempotency_key="k"),
        session_id="s-1",
        profile=profile,
        named_policy=named_policy,
        parent=None,
        working_dir=tmp_path,
        default_model="m",
        idempotency_scope="operator",
    )
    assert record.profile is not None and record.profile.goalset == ["one", "two"]
    assert profile.goalset == ["one"], "the catalog's profile was changed in place"
    assert asked == ["default"] and record.policy.name == "default"
    assert (record.idempotency_key, record.idempotency_scope, record.model) == ("k", "operator", "m")
