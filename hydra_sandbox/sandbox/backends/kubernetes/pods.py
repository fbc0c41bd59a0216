"""Reading a Pod (the API server's JSON) as Hydra's :class:`~hydra_sandbox.sandbox.spec.ContainerInfo`:
the agent container's state, exit code, OOM kill and the reason it cannot start."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hydra_sandbox.sandbox.backends.kubernetes.manifests import AGENT_CONTAINER
from hydra_sandbox.sandbox.spec import ContainerInfo

GONE_EXIT_CODE = -1
"""What ``wait`` reports for a pod that went away before its container's exit code was seen."""

_STARTING = {"ContainerCreating", "PodInitializing"}


def _agent_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == AGENT_CONTAINER), {})


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def finished(pod: dict[str, Any]) -> bool:
    """Whether the agent will write nothing more: its container terminated, or the pod failed or
    succeeded as a whole (``activeDeadlineSeconds`` passed, the node went away, ...)."""
    terminated = _agent_status(pod).get("state", {}).get("terminated")
    return terminated is not None or pod.get("status", {}).get("phase") in {"Succeeded", "Failed"}


def started(pod: dict[str, Any]) -> bool:
    """Whether the agent container has a log to read: it runs or ran."""
    state = _agent_status(pod).get("state", {})
    return "running" in state or finished(pod)


def exit_code(pod: dict[str, Any]) -> int:
    """The agent container's exit code; :data:`GONE_EXIT_CODE` when the pod ended without one."""
    terminated = _agent_status(pod).get("state", {}).get("terminated") or {}
    code = terminated.get("exitCode")
    return int(code) if code is not None else GONE_EXIT_CODE


def _status(pod: dict[str, Any]) -> str:
    state = _agent_status(pod).get("state", {})
    if finished(pod):
        return "exited"
    if "running" in state:
        return "running"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "removing"
    return "created"


def _error(pod: dict[str, Any]) -> str | None:
    """Why the agent does not run, as Kubernetes says it (image pull, deadline, config), or None."""
    state = _agent_status(pod).get("state", {})
    waiting = state.get("waiting") or {}
    if waiting.get("reason") and waiting["reason"] not in _STARTING:
        return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    terminated = state.get("terminated") or {}
    if terminated.get("message"):
        return str(terminated["message"])
    status = pod.get("status", {})
    if status.get("phase") == "Failed" and status.get("reason"):
        return f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    return None


def container_info(pod: dict[str, Any]) -> ContainerInfo:
    meta = pod.get("metadata", {})
    containers = pod.get("spec", {}).get("containers") or [{}]
    state = _agent_status(pod).get("state", {})
    terminated = state.get("terminated") or {}
    started = terminated.get("startedAt") or (state.get("running") or {}).get("startedAt")
    return ContainerInfo(
        id=meta.get("name", ""),
        name=meta.get("name", ""),
        image=containers[0].get("image", ""),
        labels=meta.get("labels") or {},
        status=_status(pod),
        exit_code=exit_code(pod) if finished(pod) else None,
        oom_killed=terminated.get("reason") == "OOMKilled",
        error=_error(pod),
        started_at=_time(started),
        finished_at=_time(terminated.get("finishedAt")),
    )
