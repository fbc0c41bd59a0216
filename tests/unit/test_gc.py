"""gc removes only this instance's objects of sessions it no longer needs."""

from __future__ import annotations

from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.sandbox.spec import ContainerInfo, NetworkInfo, VolumeInfo


class LabelledRuntime:
    def __init__(self) -> None:
        self.containers = [
            ContainerInfo(
                id="c1", name="mine-done", status="exited", labels={"hydra.home": "A", "hydra.session": "s1"}
            ),
            ContainerInfo(
                id="c2", name="mine-live", status="running", labels={"hydra.home": "A", "hydra.session": "s2"}
            ),
            ContainerInfo(
                id="c3", name="other-home", status="exited", labels={"hydra.home": "B", "hydra.session": "s9"}
            ),
        ]
        self.volumes = [
            VolumeInfo(name="v1", labels={"hydra.home": "A", "hydra.session": "s1"}),
            VolumeInfo(name="v9", labels={"hydra.home": "B", "hydra.session": "s9"}),
        ]
        self.removed: list[str] = []

    @staticmethod
    def _match(labels: dict[str, str], wanted: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in wanted.items())

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [c for c in self.containers if self._match(c.labels, labels)]

    async def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        return [v for v in self.volumes if self._match(v.labels, labels)]

    async def list_networks(self, labels: dict[str, str]) -> list[object]:
        return []

    async def remove(self, container_id: str) -> None:
        self.removed.append(container_id)

    async def remove_volume(self, name: str) -> None:
        self.removed.append(name)


async def test_gc_keeps_live_sessions_and_other_instances_objects() -> None:
    runtime = LabelledRuntime()
    report = await collect_garbage(runtime, {"s2"}, home="A")  # type: ignore[arg-type]
    assert runtime.removed == ["c1", "v1"]
    assert report.containers == ["mine-done"] and report.volumes == ["v1"]


async def test_dry_run_removes_nothing() -> None:
    runtime = LabelledRuntime()
    report = await collect_garbage(runtime, set(), home="A", dry_run=True)  # type: ignore[arg-type]
    assert runtime.removed == [] and report.total == 3


class NetworkedRuntime(LabelledRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.networks = [
            NetworkInfo(id="n1", name="net-done", labels={"hydra.home": "A", "hydra.session": "s1"}),
            NetworkInfo(id="n2", name="net-live", labels={"hydra.home": "A", "hydra.session": "s2"}),
            NetworkInfo(id="n3", name="net-unlabelled", labels={"hydra.home": "A"}),
        ]

    async def list_networks(self, labels: dict[str, str]) -> list[NetworkInfo]:  # type: ignore[override]
        return [n for n in self.networks if self._match(n.labels, labels)]

    async def remove_network(self, name: str) -> None:
        self.removed.append(name)


async def test_gc_sweeps_containers_volumes_and_networks_alike() -> None:
    runtime = NetworkedRuntime()
    report = await collect_garbage(runtime, {"s2"}, home="A")  # type: ignore[arg-type]
    assert runtime.removed == ["c1", "v1", "net-done"]
    assert report.networks == ["net-done"] and report.total == 3
