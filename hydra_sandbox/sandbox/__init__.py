"""The sandbox seam: what runs an agent, behind one Protocol, whatever the backend.

The manager sees only :class:`Sandbox` (and the models of a run); which backend implements it is a
setting (:mod:`hydra_sandbox.sandbox.backends`). Nothing here imports a backend.
"""

from hydra_sandbox.sandbox.protocol import (
    ContainerObserver,
    EventSink,
    ObservableSandbox,
    PlacementListener,
    PlacingSandbox,
    RunRequest,
    RunResult,
    Sandbox,
)

__all__ = [
    "ContainerObserver",
    "EventSink",
    "ObservableSandbox",
    "PlacementListener",
    "PlacingSandbox",
    "RunRequest",
    "RunResult",
    "Sandbox",
]
