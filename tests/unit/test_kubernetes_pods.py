"""Reading a pod's status as Hydra's ContainerInfo: states, exit codes, OOM, and why it does not run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hydra_sandbox.sandbox.backends.kubernetes.pods import GONE_EXIT_CODE, container_info, exit_code, finished, started


def pod(state: dict[str, Any] | None = None, phase: str = "Pending", **status: Any) -> dict[str, Any]:
    statuses = [{"name": "agent", "state": state}] if state is not None else []
    return {
        "metadata": {"name": "hydra-s-0a1b2c3d4e5f-0", "labels": {"hydra.session": "s-0a1b2c3d4e5f"}},
        "spec": {"containers": [{"name": "agent", "image": "hydra-agent:x"}]},
        "status": {"phase": phase, "containerStatuses": statuses, **status},
    }


@pytest.mark.parametrize(
    ("state", "phase", "status"),
    [
        (None, "Pending", "created"),
        ({"waiting": {"reason": "ContainerCreating"}}, "Pending", "created"),
        ({"running": {"startedAt": "2026-01-01T00:00:00Z"}}, "Running", "running"),
        ({"terminated": {"exitCode": 0}}, "Succeeded", "exited"),
        ({"terminated": {"exitCode": 2}}, "Failed", "exited"),
    ],
)
def test_agent_container_state_becomes_hydras_status(state: dict[str, Any] | None, phase: str, status: str) -> None:
    assert container_info(pod(state, phase)).status == status


def test_exit_code_oom_and_times_are_read_from_the_terminated_state() -> None:
    terminated = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:01:00Z",
    }
    info = container_info(pod({"terminated": terminated}, "Failed"))
    assert (info.exit_code, info.oom_killed) == (137, True)
    assert info.started_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert info.finished_at == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert (info.id, info.name, info.image) == ("hydra-s-0a1b2c3d4e5f-0", "hydra-s-0a1b2c3d4e5f-0", "hydra-agent:x")


def test_a_pod_failed_as_a_whole_has_finished_with_its_reason_and_no_exit_code() -> None:
    ended = pod({"waiting": {"reason": "ContainerCreating"}}, "Failed", reason="DeadlineExceeded", message="too long")
    assert finished(ended) and started(ended)  # nothing more will come: read what there is
    assert exit_code(ended) == GONE_EXIT_CODE
    info = container_info(ended)
    assert (info.status, info.exit_code, info.error) == ("exited", GONE_EXIT_CODE, "DeadlineExceeded: too long")


def test_why_the_container_does_not_start_is_its_error_but_creating_is_not() -> None:
    pulling = pod({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}})
    assert container_info(pulling).error == "ImagePullBackOff: no such image"
    assert container_info(pod({"waiting": {"reason": "ContainerCreating"}})).error is None
    assert not started(pulling) and not finished(pulling)


def test_a_pod_being_deleted_is_removing_until_its_container_ends() -> None:
    deleting = pod({"running": {}}, "Running")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert container_info(deleting).status == "running"
    deleting["status"]["containerStatuses"] = []
    assert container_info(deleting).status == "removing"
