"""Hydra's warm pool on the agent-sandbox CRDs: the SandboxTemplate and SandboxWarmPool it renders (valid
against the CRDs' schemas, their pod valid against Kubernetes's in strict mode, as hardened as an agent pod
of its own), the launch script a pooled pod runs, the setting, the CLI, and ``hydra doctor``'s check that
the cluster serves the CRDs. Claiming is tested in test_kubernetes_warm_runtime.py."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.doctor import _backend_checks
from hydra_sandbox.errors import ConfigError, UnsafeSpecError
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_runtime
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    AGENT_CONTAINER,
    MIN_KUBERNETES,
    READY_MARKER,
    WORKSPACE_IN_CONTAINER_NAME,
    PodOptions,
    pod_manifest,
)
from hydra_sandbox.sandbox.backends.kubernetes.permissions import NEEDED, WARM_POOL_NEEDED, needed
from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import (
    API_GROUP,
    API_VERSION,
    LAUNCH_DIR,
    LAUNCH_SCRIPT,
    LAUNCH_SUBPATH,
    LAUNCHER,
    WarmPoolOptions,
    launch_script,
    sandbox_template,
    sandbox_warm_pool,
    warm_pool_manifests,
)
from hydra_sandbox.sandbox.backends.kubernetes.warm_runtime import WarmPoolRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, ContainerSpec
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.agent_sandbox_kit import crd_schema
from tests.kube_kit import HOME, NS, write_kubeconfig

OPTIONS = PodOptions(namespace=NS, runtime_class="gvisor")
POOL = WarmPoolOptions(name="hydra-pool", image="hydra-agent:codex-0.169.0", home=HOME)
DISCOVERY = f"/apis/{API_GROUP}/{API_VERSION}"


def pod_of(template: dict[str, Any]) -> dict[str, Any]:
    pod_template = template["spec"]["podTemplate"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pooled", **pod_template["metadata"]},
            "spec": pod_template["spec"]}  # fmt: skip


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])}


def test_template_and_pool_are_valid_against_the_agent_sandbox_crd_schemas() -> None:
    template, pool = warm_pool_manifests(POOL, OPTIONS)
    jsonschema.validate(template, crd_schema("sandboxtemplates"))
    jsonschema.validate(pool, crd_schema("sandboxwarmpools"))
    assert (template["apiVersion"], template["kind"]) == (f"{API_GROUP}/{API_VERSION}", "SandboxTemplate")
    assert pool["spec"]["sandboxTemplateRef"] == {"name": template["metadata"]["name"]}
    assert {template["metadata"]["namespace"], pool["metadata"]["namespace"]} == {NS}


def test_crd_schema_check_catches_a_misspelt_field() -> None:
    template = sandbox_template(POOL, OPTIONS)
    template["spec"]["networkPolicyManagment"] = "Unmanaged"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(template, crd_schema("sandboxtemplates"))


def test_pooled_pod_is_valid_against_the_minimum_cluster_schema_in_strict_mode() -> None:
    kubernetes_validate.validate(pod_of(sandbox_template(POOL, OPTIONS)), MIN_KUBERNETES, strict=True)


def test_pooled_pod_is_as_hardened_as_an_agent_pod_of_its_own() -> None:
    pooled = pod_of(sandbox_template(POOL, OPTIONS))["spec"]
    own = pod_manifest(ContainerSpec(image=POOL.image, argv=["codex"], user="1000:1000", name="own"), OPTIONS)["spec"]
    for field in ("automountServiceAccountToken", "enableServiceLinks", "hostNetwork", "hostPID", "hostIPC",
                  "shareProcessNamespace", "securityContext", "restartPolicy", "runtimeClassName"):  # fmt: skip
        assert pooled[field] == own[field], field
    for container in containers({"spec": pooled}).values():
        assert container["securityContext"] == own["containers"][0]["securityContext"]
        assert "env" not in container or container["env"] == []  # no session's anything, no secret


def test_pooled_pods_are_under_hydras_default_deny_and_the_controller_makes_no_policy_of_its_own() -> None:
    template = sandbox_template(POOL, OPTIONS)
    assert template["spec"]["podTemplate"]["metadata"]["labels"][LABEL_ROLE] == "agent"
    assert template["spec"]["podTemplate"]["metadata"]["labels"] == {LABEL_ROLE: "agent"}  # no session, no home:
    # the Sandbox controller resets a running pod's template labels, so none is one a run patches on
    assert template["spec"]["networkPolicyManagement"] == "Unmanaged"  # "Managed" would allow the internet
    assert template["spec"]["envVarsInjectionPolicy"] == "Disallowed"
    assert template["spec"]["volumeClaimTemplatesPolicy"] == "Disallowed"


def test_pooled_pod_waits_for_its_session_without_a_deadline_then_runs_the_launch_script() -> None:
    pod = pod_of(sandbox_template(POOL, OPTIONS))
    assert "activeDeadlineSeconds" not in pod["spec"]  # counted from the pod's start, long before its session
    found = containers(pod)
    script = found[WORKSPACE_IN_CONTAINER_NAME]["command"][-1]
    assert READY_MARKER in script and "exit" not in script
    agent = found[AGENT_CONTAINER]
    assert agent["command"] == LAUNCHER == ["sh", f"{LAUNCH_DIR}/{LAUNCH_SCRIPT}"]
    [launch] = [m for m in agent["volumeMounts"] if m["mountPath"] == LAUNCH_DIR]
    assert (launch["subPath"], launch["readOnly"]) == (LAUNCH_SUBPATH, True)


def test_pool_limits_and_replicas_come_from_the_options() -> None:
    pool = POOL.model_copy(update={"replicas": 5, "limits": ResourceLimits(cpus=2, memory_mb=4096, disk_mb=512)})
    pooled = containers(pod_of(sandbox_template(pool, OPTIONS)))[AGENT_CONTAINER]
    assert pooled["resources"]["limits"] == {"cpu": "2000m", "memory": "4096Mi"}
    assert sandbox_warm_pool(pool, OPTIONS)["spec"]["replicas"] == 5


def run_launch_script(spec: ContainerSpec, tmp_path: Path) -> str:
    script = tmp_path / LAUNCH_SCRIPT
    script.write_text(launch_script(spec.model_copy(update={"workdir": str(tmp_path)})))
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True, timeout=30).stdout


def test_launch_script_runs_the_specs_argv_with_its_environment_and_hostile_values_stay_data(
    tmp_path: Path,
) -> None:
    hostile = "'; touch pwned; echo '$(touch pwned2)`touch pwned3`"
    spec = ContainerSpec(
        image="i", user="1000:1000", env={"GREETING": hostile},
        argv=["sh", "-c", 'printf "%s|%s|%s" "$GREETING" "$1" "$PWD"', "sh", "a b; touch pwned4"],
    )  # fmt: skip
    assert run_launch_script(spec, tmp_path) == f"{hostile}|a b; touch pwned4|{tmp_path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAUNCH_SCRIPT]


@pytest.mark.parametrize(("env", "argv0"), [({"BAD-NAME": "x"}, "codex"), ({"-i": "x"}, "codex"), ({}, "A=b")])
def test_launch_script_refuses_what_env_would_misread(env: dict[str, str], argv0: str) -> None:
    with pytest.raises(UnsafeSpecError):
        launch_script(ContainerSpec(image="i", user="1000:1000", env=env, argv=[argv0]))


@pytest.mark.parametrize("name", ["Hydra-Pool", "pool_1", "-pool", "p" * 51])
def test_warm_pool_setting_that_cannot_name_a_pool_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kubernetes_warm_pool|HYDRA_KUBERNETES_WARM_POOL"):
        load_settings(data_home=tmp_path, kubernetes_warm_pool=name)


def test_the_warm_pool_setting_gives_the_runtime_that_claims_from_that_pool(tmp_path: Path) -> None:
    settings = load_settings(data_home=tmp_path, backend="kubernetes", kubernetes_warm_pool="hydra-pool")
    runtime = kubernetes_runtime(settings)
    assert isinstance(runtime, WarmPoolRuntime) and runtime.pool == "hydra-pool"
    assert set(needed(runtime)) == set(NEEDED + WARM_POOL_NEEDED)
    plain = kubernetes_runtime(settings.model_copy(update={"kubernetes_warm_pool": None}))
    assert not isinstance(plain, WarmPoolRuntime) and needed(plain) == NEEDED


def test_cli_prints_the_template_and_pool_for_kubectl_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HYDRA_KUBERNETES_NAMESPACE", NS)
    monkeypatch.setenv("HYDRA_KUBERNETES_WARM_POOL", "hydra-pool")
    result = CliRunner().invoke(app, ["kubernetes", "warm-pool-manifest", "--replicas", "3", "--cpus", "2"])
    assert result.exit_code == 0, result.output
    template, pool = yaml.safe_load_all(result.output)
    assert (template["kind"], pool["kind"], pool["spec"]["replicas"]) == ("SandboxTemplate", "SandboxWarmPool", 3)
    assert template["metadata"]["name"] == pool["metadata"]["name"] == "hydra-pool"
    assert template["spec"]["podTemplate"]["spec"]["securityContext"]["runAsUser"] == 1000
    jsonschema.validate(template, crd_schema("sandboxtemplates"))


def test_cli_without_a_pool_name_or_with_bad_limits_names_what_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("HYDRA_KUBERNETES_WARM_POOL", raising=False)
    with pytest.raises(ConfigError, match="no pool name") as unnamed:
        CliRunner().invoke(app, ["kubernetes", "warm-pool-manifest"], catch_exceptions=False)
    assert unnamed.value.hint is not None and "--name" in unnamed.value.hint
    with pytest.raises(ConfigError, match="uid"):
        CliRunner().invoke(
            app, ["kubernetes", "warm-pool-manifest", "--name", "p", "--uid", "0"], catch_exceptions=False
        )
    with pytest.raises(ConfigError, match="memory_mb"):
        CliRunner().invoke(
            app, ["kubernetes", "warm-pool-manifest", "--name", "p", "--memory-mb", "1"], catch_exceptions=False
        )


def pool_settings(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> HydraSettings:
    """Settings of a warm pool on the mock cluster, which knows pods and claims (the cluster check lists them)."""
    kmock.resources["v1/pods"] = {}
    kmock.resources[f"{API_GROUP}/{API_VERSION}/sandboxclaims"] = {}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    return load_settings(
        data_home=tmp_path, backend="kubernetes", kubernetes_namespace=NS, kubernetes_kubeconfig=kubeconfig,
        kubernetes_warm_pool="hydra-pool",
    )  # fmt: skip


def warm_pool_check(settings: HydraSettings) -> Any:
    return next(c for c in _backend_checks(settings) if c.name == "kubernetes warm pool")


async def test_doctor_says_which_crds_the_cluster_does_not_serve(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    settings = pool_settings(kmock, tmp_path)
    kmock[f"get {DISCOVERY}"] << {"kind": "APIResourceList", "resources": [{"name": "sandboxtemplates"}]}
    check = await asyncio.to_thread(warm_pool_check, settings)
    assert not check.ok
    assert check.detail == (
        f"pool hydra-pool: the cluster does not serve sandboxwarmpools.{API_GROUP}/{API_VERSION}, "
        f"sandboxclaims.{API_GROUP}/{API_VERSION}"
    )
    assert check.fix is not None and "warm-pool-manifest" in check.fix and "agent-sandbox" in check.fix


async def test_doctor_says_the_cluster_serves_the_crds(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    settings = pool_settings(kmock, tmp_path)
    resources = [{"name": r} for r in ("sandboxtemplates", "sandboxwarmpools", "sandboxclaims", "sandboxclaims/status")]
    kmock[f"get {DISCOVERY}"] << {"kind": "APIResourceList", "resources": resources}
    check = await asyncio.to_thread(warm_pool_check, settings)
    assert check.ok and check.detail.startswith("pool hydra-pool: the cluster serves the agent-sandbox CRDs")


async def test_doctor_says_so_when_the_cluster_serves_no_agent_sandbox_api_at_all(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    settings = pool_settings(kmock, tmp_path)
    kmock[f"get {DISCOVERY}"] << 404
    check = await asyncio.to_thread(warm_pool_check, settings)
    assert not check.ok and check.detail.count(f".{API_GROUP}/{API_VERSION}") == 3


async def test_doctor_checks_no_crds_while_the_warm_pool_setting_is_off(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    settings = pool_settings(kmock, tmp_path).model_copy(update={"kubernetes_warm_pool": None})
    names = [c.name for c in await asyncio.to_thread(_backend_checks, settings)]
    assert names == ["kubernetes"]


async def test_doctor_does_not_guess_about_the_crds_when_the_cluster_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as bound:  # nothing listens there
        bound.bind(("127.0.0.1", 0))
        unreachable = write_kubeconfig(tmp_path / "gone", f"http://127.0.0.1:{bound.getsockname()[1]}")
        settings = load_settings(
            data_home=tmp_path, backend="kubernetes", kubernetes_kubeconfig=unreachable, kubernetes_warm_pool="p"
        )
        cluster, pool = await asyncio.to_thread(_backend_checks, settings)
    assert not cluster.ok and not pool.ok
    assert pool.detail == "pool p: not checked, the cluster did not answer (see the kubernetes check)"
