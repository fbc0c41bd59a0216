"""Placement across several engines: the most free places wins, ties go to the first listed, a full or
unreachable engine takes nothing, and loads are counted from each engine's agent containers."""

from __future__ import annotations

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.placement import EngineLoad, choose_engine, engine_loads
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec

IMAGE = "hydra-agent:fake"


def load(engine: str, running: int, limit: int = 4, reachable: bool = True) -> EngineLoad:
    return EngineLoad(engine=engine, running=running, limit=limit, reachable=reachable)


@pytest.mark.parametrize(
    ("loads", "chosen"),
    [
        ([load("a", 3), load("b", 1), load("c", 2)], "b"),
        ([load("a", 1), load("b", 1)], "a"),
        ([load("a", 0, limit=2), load("b", 1, limit=8)], "b"),
        ([load("a", 4), load("b", 9)], None),
        ([load("a", 0, reachable=False), load("b", 3)], "b"),
        ([load("a", 0, reachable=False)], None),
        ([], None),
    ],
)
def test_the_engine_with_the_most_free_places_is_chosen_and_none_when_all_are_full(
    loads: list[EngineLoad], chosen: str | None
) -> None:
    assert choose_engine(loads) == chosen


def test_an_engine_over_its_limit_has_no_free_places_rather_than_a_negative_count() -> None:
    assert load("a", 9).free == 0 and load("a", 1).free == 3 and load("a", 0, reachable=False).free == 0


async def test_loads_count_agents_that_run_or_are_about_to_and_an_engine_that_fails_is_unreachable() -> None:
    busy = FakeRuntime(FakeProgram(keeps_running=True), images=[IMAGE])
    for n, role in enumerate(["agent", "agent", "agent", "proxy"]):
        labels = {LABEL_SESSION: f"s{n}", LABEL_ROLE: role}
        spec = ContainerSpec(image=IMAGE, argv=["x"], user="1000:1000", labels=labels)
        container_id = await busy.create(spec)
        if n < 2:
            await busy.start(container_id)  # the third agent is created, not started: it counts too
    done = await busy.list_containers({LABEL_SESSION: "s0"})
    await busy.stop(done[0].id)  # an agent that ended no longer counts
    down = FakeRuntime()
    down.failures["list_containers"] = RuntimeUnavailableError("cannot reach tcp://build2.lan:2376")
    runtimes: dict[str, ContainerRuntime] = {"tcp://build1.lan:2376": busy, "tcp://build2.lan:2376": down}
    loads = await engine_loads(runtimes, limit=4)
    unreachable = load("tcp://build2.lan:2376", 0, reachable=False)
    unreachable = unreachable.model_copy(update={"error": "cannot reach tcp://build2.lan:2376"})
    assert loads == [load("tcp://build1.lan:2376", 2), unreachable]
    assert choose_engine(loads) == "tcp://build1.lan:2376"
