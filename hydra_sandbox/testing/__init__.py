"""Test your workflows against a real Hydra, offline: a scripted model, Hydra in-process or in a
container, and helpers to follow a session. See docs/testing.md.

The containers (:class:`HydraContainer`, :class:`ScriptedModelContainer`) need the ``testing`` extra
(``pip install 'hydra-sandbox[testing]'``); they are imported on first use, so everything else works
without it. The pytest plugin (fixtures ``hydra_*`` and the ``requires_docker`` marker) is
:mod:`hydra_sandbox.testing.plugin`, loaded by pytest through its entry point.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hydra_sandbox.testing.containers import HydraContainer, ScriptedModelContainer
    from hydra_sandbox.testing.engine import ScriptReport
    from hydra_sandbox.testing.inprocess import InProcessHydra
    from hydra_sandbox.testing.model import ScriptedModel
    from hydra_sandbox.testing.script import (
        FORMAT_VERSION,
        CallStep,
        FailStep,
        Failure,
        ModelScript,
        ReplyStep,
        Route,
        RunStep,
        ToolCall,
        WaitStep,
        load_script,
        parse_script,
    )
    from hydra_sandbox.testing.sessions import AgentSession, SessionOutcome, call_tool, spawn
    from hydra_sandbox.testing.transcript import script_from_transcript
    from hydra_sandbox.testing.workspace import copy_workspace

_WHERE = {
    "HydraContainer": "containers",
    "ScriptedModelContainer": "containers",
    "ScriptReport": "engine",
    "InProcessHydra": "inprocess",
    "ScriptedModel": "model",
    **dict.fromkeys(
        [
            "FORMAT_VERSION",
            "CallStep",
            "FailStep",
            "Failure",
            "ModelScript",
            "ReplyStep",
            "Route",
            "RunStep",
            "ToolCall",
            "WaitStep",
            "load_script",
            "parse_script",
        ],
        "script",
    ),
    **dict.fromkeys(["AgentSession", "SessionOutcome", "call_tool", "spawn"], "sessions"),
    "script_from_transcript": "transcript",
    "copy_workspace": "workspace",
}
__all__ = [
    "FORMAT_VERSION",
    "AgentSession",
    "CallStep",
    "FailStep",
    "Failure",
    "HydraContainer",
    "InProcessHydra",
    "ModelScript",
    "ReplyStep",
    "Route",
    "RunStep",
    "ScriptReport",
    "ScriptedModel",
    "ScriptedModelContainer",
    "SessionOutcome",
    "ToolCall",
    "WaitStep",
    "call_tool",
    "copy_workspace",
    "load_script",
    "parse_script",
    "script_from_transcript",
    "spawn",
]


def __getattr__(name: str) -> Any:
    """Import on first use: the pytest plugin imports this package in every test run of an environment
    where Hydra is installed, so importing it must stay cheap (no MCP client, no Docker, no
    testcontainers until a name that needs them is used)."""
    module_name = _WHERE.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hydra_sandbox.testing' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"hydra_sandbox.testing.{module_name}")
    except ModuleNotFoundError as exc:
        if module_name != "containers":
            raise
        raise ImportError(
            f"{name} needs testcontainers ({exc.name} is not installed): pip install 'hydra-sandbox[testing]'"
        ) from None
    return getattr(module, name)
