"""Sessions: spawn resolution (:mod:`.spawning`), the registry (:mod:`.registry`), scheduling
(:mod:`.scheduler`), runs and lifecycle (:mod:`.runs`), approval (:mod:`.approval`), composed by the
:class:`~hydra_sandbox.orchestration.manager.AgentManager`."""
