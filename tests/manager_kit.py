"""An AgentManager over the fake sandbox for tests, with the real journal, masker and recorder, and the
two waits such tests need (a session to finish; a condition, polled with a deadline)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra_sandbox.applying import ApplyResult
from hydra_sandbox.authority import OPERATOR, Principal
from hydra_sandbox.journal import Journal
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.settings import REPO_ROOT
from tests.fake_sandbox import FakeSandbox


def manager_over(
    data: Path,
    sandbox: FakeSandbox,
    *,
    profile_dirs: Sequence[Path] = (),
    policy_dirs: Sequence[Path] = (),
    max_concurrent: int = 4,
    secrets: Sequence[str] = (),
) -> AgentManager:
    """A manager whose journal is ``data/journal.sqlite3`` (a second one over the same ``data`` is the
    same server restarted); the built-in profiles and policies, then the given directories."""
    return AgentManager(
        sandbox=sandbox,
        recorder=Recorder(Journal(data / "journal.sqlite3"), SecretMasker(list(secrets))),
        profiles=ProfileCatalog([REPO_ROOT / "profiles", *profile_dirs]),
        policies=PolicyCatalog([REPO_ROOT / "policies", *policy_dirs]),
        default_model="test-model",
        max_concurrent=max_concurrent,
        known_secrets=list(secrets),
    )


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def finish(manager: AgentManager, session_id: str) -> SessionStatus:
    record = await manager.wait(session_id, 10, principal=OPERATOR)
    assert not record.active, f"session still {record.status}"
    return record.status


async def apply_reviewed(manager: AgentManager, session_id: str, principal: Principal = OPERATOR) -> ApplyResult:
    """``apply(confirm=True)`` with the digest of the preview taken now, as an operator who read it."""
    digest = (await manager.diff(session_id, OPERATOR)).digest
    return await manager.apply(session_id, True, principal, digest=digest)
