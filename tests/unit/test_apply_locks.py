"""Applies lock by path: working directories that overlap (``/p`` and ``/p/sub``) are applied one after
the other, and the second checks its conflicts against what the first wrote."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path, PurePath
from typing import Any

import pytest

from hydra_sandbox.applying import apply_changes
from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import ApplyConflictError
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.path_locks import PathLocks, overlaps, paths_under
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.policy import Policy
from tests.fake_sandbox import FakeRun, FakeSandbox
from tests.manager_kit import apply_reviewed, finish, manager_over

TRIALS = 30


class ApplyingSandbox(FakeSandbox):
    """Diff and apply are the real ones over the scripted layers, in worker threads like Docker's; it
    counts how many applies are inside it at once."""

    def __init__(self, layers: Path) -> None:
        super().__init__(layers=layers)
        self.in_flight = 0
        self.max_in_flight = 0

    async def diff(self, session_id: str, policy: Policy) -> Any:
        return await asyncio.to_thread(compute_diff, self.workspaces[session_id], policy, mask=self.mask)

    async def apply(self, session_id: str, policy: Policy, *, confirm: bool, **terms: Any) -> Any:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            ws = self.workspaces[session_id]
            return await asyncio.to_thread(lambda: apply_changes(ws, policy, confirm=confirm, **terms))
        finally:
            self.in_flight -= 1


@pytest.fixture
def sandbox(tmp_path: Path) -> ApplyingSandbox:
    return ApplyingSandbox(tmp_path / "layers")


@pytest.fixture
async def manager(tmp_path: Path, sandbox: ApplyingSandbox) -> AsyncIterator[AgentManager]:
    sandbox.script("outer", FakeRun(files={"sub/f.txt": "from the outer session\n"}))
    sandbox.script("inner", FakeRun(files={"f.txt": "from the inner session\n"}))
    mgr = manager_over(tmp_path, sandbox)
    await mgr.start()
    yield mgr
    await mgr.close()


async def _spawned(manager: AgentManager, working_dir: Path, marker: str) -> str:
    request = SpawnRequest(working_dir=str(working_dir), custom_prompt=marker)
    session_id = str((await manager.spawn(request, principal=OPERATOR)).session["session_id"])
    await finish(manager, session_id)
    return session_id


async def test_overlapping_applies_are_serialised_and_never_silently_overwrite_each_other(
    manager: AgentManager, sandbox: ApplyingSandbox, tmp_path: Path
) -> None:
    overwrites, outcomes = 0, {"outer": 0, "inner": 0}
    projects = [tmp_path / f"p{trial}" for trial in range(TRIALS)]
    for project in projects:
        (project / "sub").mkdir(parents=True)
        (project / "sub" / "f.txt").write_text("original\n")
    sessions = await asyncio.gather(
        *(_spawned(manager, p, "outer") for p in projects), *(_spawned(manager, p / "sub", "inner") for p in projects)
    )
    for trial, project in enumerate(projects):
        outer, inner = sessions[trial], sessions[TRIALS + trial]
        results = await asyncio.gather(
            apply_reviewed(manager, outer),
            apply_reviewed(manager, inner),
            return_exceptions=True,
        )
        won = [name for name, r in zip(("outer", "inner"), results, strict=True) if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, ApplyConflictError) for r in lost), lost
        overwrites += len(won) > 1
        if len(won) == 1:
            outcomes[won[0]] += 1
            assert (project / "sub" / "f.txt").read_text() == f"from the {won[0]} session\n"
    assert overwrites == 0, f"{overwrites} of {TRIALS} trials applied both sessions over the same file"
    assert sum(outcomes.values()) == TRIALS
    assert sandbox.max_in_flight == 1, "applies to /p and /p/sub ran at the same time"


async def test_an_apply_is_refused_when_an_overlapping_directory_got_the_same_file_after_it_started(
    tmp_path: Path,
) -> None:
    """The ledger check alone (no host files): /p applied sub/f.txt, so /p/sub's f.txt is a conflict."""
    sandbox = FakeSandbox()
    sandbox.script("outer", FakeRun(changes=["sub/f.txt"]))
    sandbox.script("inner", FakeRun(changes=["f.txt"]))
    project = tmp_path / "p"
    (project / "sub").mkdir(parents=True)
    manager = manager_over(tmp_path, sandbox)
    await manager.start()
    try:
        outer = await _spawned(manager, project, "outer")
        inner = await _spawned(manager, project / "sub", "inner")
        await apply_reviewed(manager, outer)
        with pytest.raises(ApplyConflictError, match=f"applied by session {outer} in {project}.*f.txt"):
            await apply_reviewed(manager, inner)
    finally:
        await manager.close()


async def test_a_path_lock_excludes_overlapping_paths_and_not_others() -> None:
    locks = PathLocks()
    order: list[str] = []

    async def hold(path: str, name: str, entered: asyncio.Event | None = None) -> None:
        async with locks.hold(PurePath(path)):
            order.append(f"{name}+")
            if entered is not None:
                entered.set()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            order.append(f"{name}-")

    first_in = asyncio.Event()
    first = asyncio.create_task(hold("/p", "p", first_in))
    await first_in.wait()
    others = [asyncio.create_task(hold("/p/sub", "sub")), asyncio.create_task(hold("/q", "q"))]
    await asyncio.gather(first, *others)
    assert order.index("sub+") > order.index("p-"), order  # /p/sub waited for /p
    assert order.index("q+") < order.index("p-"), order  # /q did not
    assert locks.held() == []


async def test_a_cancelled_holder_releases_its_path() -> None:
    locks = PathLocks()
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with locks.hold(PurePath("/p")):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold_forever())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5), locks.hold(PurePath("/p/sub")):
        assert locks.held() == [PurePath("/p/sub")]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("/p", "/p", True), ("/p", "/p/sub", True), ("/p/sub", "/p", True), ("/p", "/pp", False), ("/p", "/q", False)],
)
def test_overlap_is_containment_not_a_string_prefix(a: str, b: str, expected: bool) -> None:
    assert overlaps(PurePath(a), PurePath(b)) is expected


def test_ledger_paths_of_an_overlapping_root_are_seen_from_this_root() -> None:
    assert paths_under(PurePath("/p/sub"), PurePath("/p"), ["sub/f.txt", "other.txt"]) == {"f.txt"}
    assert paths_under(PurePath("/p"), PurePath("/p/sub"), ["f.txt"]) == {"sub/f.txt"}
    assert paths_under(PurePath("/p"), PurePath("/p"), ["a/b"]) == {"a/b"}
