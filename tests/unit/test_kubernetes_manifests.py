"""The Kubernetes backend's manifests: every hardening field of the agent Pod, the default-deny
NetworkPolicies, every refusal, and every manifest valid against the Kubernetes schemas of the documented
minimum cluster version (kubernetes-validate, strict: an unknown or misspelt field fails)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.policy import Policy, ResourceLimits
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.agent import AgentContainer, agent_spec, session_labels
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    DEADLINE_MARGIN_S,
    GATEWAY_ROLE,
    MIN_KUBERNETES,
    READY_MARKER,
    TRANSFER_MOUNT,
    WORKSPACE_IN_CONTAINER_NAME,
    WORKSPACE_OUT_CONTAINER_NAME,
    WORKSPACE_SUBPATH,
    PodOptions,
    default_deny_policy,
    gateway_policy,
    pod_manifest,
    tmpfs_size,
    wait_for_archive_command,
)
from hydra_sandbox.sandbox.egress import ActiveEgress
from hydra_sandbox.sandbox.spec import (
    LABEL_HOME,
    LABEL_PARENT,
    LABEL_ROLE,
    LABEL_SESSION,
    ContainerSpec,
    Mount,
    home_label,
)

OPTIONS = PodOptions(namespace="hydra-agents")
LABELS = {LABEL_HOME: "0123456789abcdef", LABEL_SESSION: "s-0a1b2c3d4e5f", LABEL_PARENT: "", LABEL_ROLE: "agent"}


def spec(**changes: Any) -> ContainerSpec:
    fields: dict[str, Any] = {
        "image": "hydra-agent:codex-0.169.0",
        "argv": ["codex", "exec", "--json", "do it"],
        "env": {"HOME": "/home/agent"},
        "user": "1000:1001",
        "labels": LABELS,
        "name": "hydra-s-0a1b2c3d4e5f-0",
        "limits": ResourceLimits(cpus=1.5, memory_mb=768, pids=128, timeout_s=600),
        "mounts": [Mount(type="volume", source="hydra-ws-s-0a1b2c3d4e5f", target="/workspace")],
    }
    return ContainerSpec(**{**fields, **changes})


def container(manifest: dict[str, Any], name: str = "agent") -> dict[str, Any]:
    [found] = [
        c for c in manifest["spec"]["containers"] + manifest["spec"].get("initContainers", []) if c["name"] == name
    ]
    return found  # type: ignore[no-any-return]


def assert_valid(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, MIN_KUBERNETES, strict=True)


def test_pod_is_valid_against_the_minimum_cluster_schema_in_strict_mode() -> None:
    assert_valid(pod_manifest(spec(), OPTIONS))
    assert_valid(pod_manifest(spec(), PodOptions(namespace="x", runtime_class="gvisor")))


def test_strict_schema_validation_catches_a_misspelt_field() -> None:
    manifest = pod_manifest(spec(), OPTIONS)
    container(manifest)["securityContext"]["readOnlyRootFileSystem"] = True  # capital S: not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        assert_valid(manifest)


def test_network_policies_are_valid_against_the_minimum_cluster_schema() -> None:
    assert_valid(default_deny_policy(OPTIONS))
    assert_valid(gateway_policy("s-0a1b2c3d4e5f", LABELS, OPTIONS))


def test_container_runs_as_the_specs_non_root_user() -> None:
    manifest = pod_manifest(spec(), OPTIONS)
    for context in (manifest["spec"]["securityContext"], container(manifest)["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"]) == (1000, 1001)


def test_container_is_locked_down() -> None:
    context = container(pod_manifest(spec(), OPTIONS))["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "add" not in context["capabilities"]


def test_pod_gets_no_token_no_service_links_no_host_namespaces_and_never_restarts() -> None:
    pod = pod_manifest(spec(), OPTIONS)["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert (pod["hostNetwork"], pod["hostPID"], pod["hostIPC"], pod["shareProcessNamespace"]) == (False,) * 4
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_deadline_follows_the_runs_timeout_with_a_margin() -> None:
    pod = pod_manifest(spec(), OPTIONS)["spec"]
    assert pod["activeDeadlineSeconds"] == 600 + DEADLINE_MARGIN_S


def test_resources_request_and_limit_the_specs_cpu_and_memory() -> None:
    resources = container(pod_manifest(spec(), OPTIONS))["resources"]
    assert resources["limits"] == {"cpu": "1500m", "memory": "768Mi"}
    assert resources["requests"] == resources["limits"]


def test_runtime_class_is_set_only_when_chosen() -> None:
    assert "runtimeClassName" not in pod_manifest(spec(), OPTIONS)["spec"]
    chosen = pod_manifest(spec(), PodOptions(namespace="hydra", runtime_class="kata"))
    assert chosen["spec"]["runtimeClassName"] == "kata"


def test_tmpfs_becomes_memory_backed_empty_dirs_with_their_size() -> None:
    manifest = pod_manifest(spec(tmpfs={"/tmp": "rw,nosuid,nodev,noexec,size=64m"}), OPTIONS)
    tmp = next(m for m in container(manifest)["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in manifest["spec"]["volumes"] if v["name"] == tmp["name"])
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}


@pytest.mark.parametrize(("size", "quantity"), [("512m", "512Mi"), ("1g", "1Gi"), ("64k", "64Ki"), ("4096", "4096")])
def test_tmpfs_sizes_become_quantities(size: str, quantity: str) -> None:
    assert tmpfs_size("/tmp", f"rw,nosuid,nodev,noexec,size={size}") == quantity


def test_tmpfs_size_without_a_translation_is_refused() -> None:
    with pytest.raises(UnsafeSpecError, match="tmpfs '/tmp'"):
        tmpfs_size("/tmp", "rw,nosuid,nodev,noexec,size=50%")


def test_labels_name_metadata_and_command_replaces_the_entrypoint() -> None:
    manifest = pod_manifest(spec(), OPTIONS)
    assert manifest["metadata"] == {"name": "hydra-s-0a1b2c3d4e5f-0", "namespace": "hydra-agents", "labels": LABELS}
    agent = container(manifest)
    assert agent["command"] == ["codex", "exec", "--json", "do it"]
    assert "args" not in agent
    assert agent["env"] == [{"name": "HOME", "value": "/home/agent"}]
    assert agent["workingDir"] == "/workspace"


def test_named_volume_lives_with_the_pod() -> None:
    manifest = pod_manifest(spec(), OPTIONS)
    mount = next(m for m in container(manifest)["volumeMounts"] if m["mountPath"] == "/workspace")
    volume = next(v for v in manifest["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume == {"name": mount["name"], "emptyDir": {}}


def test_named_volumes_are_bounded_by_the_policys_disk_quota() -> None:
    limits = ResourceLimits(disk_mb=300)
    manifest = pod_manifest(spec(limits=limits), OPTIONS)
    assert_valid(manifest)
    mount = next(m for m in container(manifest)["volumeMounts"] if m["mountPath"] == "/workspace")
    volume = next(v for v in manifest["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"] == {"sizeLimit": "300Mi"}


def test_bind_mount_is_refused() -> None:
    with pytest.raises(UnsafeSpecError, match="bind of /srv/hydra/sessions/x has no Kubernetes translation"):
        pod_manifest(spec(mounts=[Mount(type="bind", source="/srv/hydra/sessions/x", target="/x")]), OPTIONS)


def test_unhardened_spec_built_around_validation_is_refused() -> None:
    weakened = spec().model_copy(update={"cap_add": ["NET_ADMIN"]})
    with pytest.raises(UnsafeSpecError, match="cap_add"):
        pod_manifest(weakened, OPTIONS)
    root = spec().model_copy(update={"user": "0:0"})
    with pytest.raises(UnsafeSpecError, match="runs as root"):
        pod_manifest(root, OPTIONS)


@pytest.mark.parametrize("name", [None, "Hydra_Upper", "x" * 64, "-leading"])
def test_pod_name_that_is_not_a_dns_label_is_refused(name: str | None) -> None:
    with pytest.raises(UnsafeSpecError, match="cannot name a Kubernetes pod"):
        pod_manifest(spec(name=name), OPTIONS)


@pytest.mark.parametrize("labels", [{"hydra.session": "has space"}, {"hydra.session": "x" * 64}, {"bad key!": "v"}])
def test_label_kubernetes_cannot_carry_is_refused(labels: dict[str, str]) -> None:
    with pytest.raises(UnsafeSpecError, match="Kubernetes label"):
        pod_manifest(spec(labels=labels), OPTIONS)


def test_default_deny_covers_every_hydra_pod_but_gateways_and_allows_nothing() -> None:
    policy = default_deny_policy(OPTIONS)["spec"]
    assert policy["podSelector"] == {
        "matchExpressions": [
            {"key": LABEL_ROLE, "operator": "Exists"},  # Hydra's pods only, not the namespace's others
            {"key": LABEL_ROLE, "operator": "NotIn", "values": [GATEWAY_ROLE]},
        ]
    }
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [] and policy["egress"] == []


def test_session_policy_opens_only_the_sessions_own_gateway() -> None:
    policy = gateway_policy("s-0a1b2c3d4e5f", LABELS, OPTIONS)
    assert policy["metadata"]["labels"] == LABELS  # found again by gc, like the pod
    rules = policy["spec"]
    assert rules["podSelector"] == {"matchLabels": {LABEL_SESSION: "s-0a1b2c3d4e5f", LABEL_ROLE: "agent"}}
    assert rules["policyTypes"] == ["Egress"]
    [rule] = rules["egress"]
    gateway = {LABEL_SESSION: "s-0a1b2c3d4e5f", LABEL_ROLE: GATEWAY_ROLE}
    ports = [{"protocol": "TCP", "port": 18080}, {"protocol": "TCP", "port": 18081}]  # model, agent MCP
    assert rule == {"to": [{"podSelector": {"matchLabels": gateway}}], "ports": ports}
    assert "namespaceSelector" not in rule["to"][0]  # no other namespace, no ipBlock


def test_the_agent_spec_the_orchestrator_builds_becomes_a_valid_pod(tmp_path: Path) -> None:
    request = RunRequest(
        session_id="s-0a1b2c3d4e5f", profile_id="default", policy=Policy(name="t"), prompt="go",
        working_dir=tmp_path, model="m",
    )  # fmt: skip
    home = home_label(tmp_path)
    workspace = Mount(type="volume", source="hydra-ws-s-0a1b2c3d4e5f", target="/workspace")
    agent = AgentContainer(
        image="hydra-agent:codex-0.169.0", workspace=workspace, agent_uid=1000, agent_gid=1000,
        labels=session_labels(request, "agent", home), egress=ActiveEgress(),
    )  # fmt: skip
    manifest = pod_manifest(agent_spec(request, agent), OPTIONS)
    assert_valid(manifest)
    assert manifest["metadata"]["labels"][LABEL_SESSION] == "s-0a1b2c3d4e5f"
    assert {m["mountPath"] for m in container(manifest)["volumeMounts"]} >= {"/workspace", "/codex-home", "/tmp"}


def test_hydras_own_seccomp_profile_is_used_where_the_operator_installed_it() -> None:
    options = PodOptions(namespace="hydra", seccomp_localhost="hydra/agent.json")
    manifest = pod_manifest(spec(), options)
    assert_valid(manifest)
    wanted = {"type": "Localhost", "localhostProfile": "hydra/agent.json"}
    assert manifest["spec"]["securityContext"]["seccompProfile"] == wanted
    assert container(manifest)["securityContext"]["seccompProfile"] == wanted


@pytest.mark.parametrize("path", ["../etc/x.json", "hydra/../../x", "/var/lib/kubelet/seccomp/x.json", ".hidden", ""])
def test_seccomp_profile_path_outside_the_kubelets_directory_is_refused(path: str) -> None:
    with pytest.raises(ValidationError, match="seccomp_localhost"):
        PodOptions(namespace="hydra", seccomp_localhost=path)


def test_a_pod_with_a_workspace_waits_for_it_and_keeps_it_readable_after_the_agent() -> None:
    manifest = pod_manifest(spec(), OPTIONS)
    assert_valid(manifest)
    pod = manifest["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [WORKSPACE_IN_CONTAINER_NAME]
    assert [c["name"] for c in pod["containers"]] == ["agent", WORKSPACE_OUT_CONTAINER_NAME]
    agent_mount = next(m for m in container(manifest)["volumeMounts"] if m["mountPath"] == "/workspace")
    assert agent_mount["subPath"] == WORKSPACE_SUBPATH, "the agent must see only the extracted top directory"
    for name, read_only in ((WORKSPACE_IN_CONTAINER_NAME, False), (WORKSPACE_OUT_CONTAINER_NAME, True)):
        [mount] = container(manifest, name)["volumeMounts"]
        assert mount == {"name": agent_mount["name"], "mountPath": TRANSFER_MOUNT, "readOnly": read_only}
    assert container(manifest, WORKSPACE_OUT_CONTAINER_NAME)["command"] == ["sleep", str(600 + DEADLINE_MARGIN_S)]
    assert container(manifest, WORKSPACE_IN_CONTAINER_NAME)["command"] == wait_for_archive_command()


def test_the_transfer_containers_are_as_locked_down_as_the_agent_and_get_nothing_else() -> None:
    manifest = pod_manifest(spec(env={"HOME": "/home/agent", "OPENAI_BASE_URL": "http://127.0.0.1:18080/v1"}), OPTIONS)
    for name in (WORKSPACE_IN_CONTAINER_NAME, WORKSPACE_OUT_CONTAINER_NAME):
        transfer = container(manifest, name)
        assert transfer["securityContext"] == container(manifest)["securityContext"]
        assert transfer["image"] == container(manifest)["image"]
        assert "env" not in transfer and transfer["resources"]["limits"] == transfer["resources"]["requests"]


def test_the_init_container_gives_up_on_an_archive_that_never_comes(tmp_path: Path) -> None:
    marker_dir = tmp_path / "xfer"
    marker_dir.mkdir()
    script = wait_for_archive_command(wait_s=0)[2].replace(TRANSFER_MOUNT, str(marker_dir))
    assert subprocess.run(["sh", "-c", script], check=False, timeout=30).returncode == 1
    (marker_dir / READY_MARKER).touch()
    released = wait_for_archive_command()[2].replace(TRANSFER_MOUNT, str(marker_dir))
    assert subprocess.run(["sh", "-c", released], check=False, timeout=30).returncode == 0


def test_a_pod_without_a_workspace_has_no_transfer_containers() -> None:
    pod = pod_manifest(spec(mounts=[]), OPTIONS)["spec"]
    assert "initContainers" not in pod and [c["name"] for c in pod["containers"]] == ["agent"]
