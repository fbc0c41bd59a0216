"""The Kubernetes backend: an agent as a hardened pod in one namespace, isolated by NetworkPolicies.

:mod:`.manifests` translates the neutral spec into the Pod and NetworkPolicy manifests (pure),
:mod:`.exec_transport` moves the workspace in and out over ``pods/exec`` (:mod:`.exec_channels` frames
it), :mod:`.gateway_manifests` and :mod:`.gateway_pods` place a session's gateway in a pod of its own,
:mod:`.runtime` implements the :class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime` with the official
``kubernetes`` client (the optional extra ``hydra-sandbox[kubernetes]``). docs/kubernetes.md says what is
built, what Kubernetes cannot express, and what was tested without a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_sandbox.errors import ConfigError

if TYPE_CHECKING:
    from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime
    from hydra_sandbox.sandbox.protocol import Sandbox
    from hydra_sandbox.settings import HydraSettings

NAME = "kubernetes"

MISSING = (
    "the run wiring: the agent's relay to its gateway pod's address (its entry relays to a Unix socket), the "
    "gateway's token usage reported back to Hydra (budgets) and the agent MCP relay, and the orchestrator "
    "calling the pods/exec workspace transport between the pod's creation and its agent's start and again "
    "before the pod is removed (the transport, the gateway pod and process, its NetworkPolicies and Secret "
    "are built)"
)


def kubernetes_runtime(settings: HydraSettings) -> KubernetesRuntime:
    """The Kubernetes runtime alone (``hydra gc``, ``hydra doctor``); the client connects on first use."""
    try:
        from hydra_sandbox.sandbox.backends.kubernetes.manifests import PodOptions
        from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime, load_api_client
    except ImportError as exc:  # the optional extra is not installed
        raise ConfigError(
            f"HYDRA_BACKEND: 'kubernetes' needs the kubernetes client ({exc.name} is missing)",
            hint="pip install 'hydra-sandbox[kubernetes]'",
        ) from None
    options = PodOptions(
        namespace=settings.kubernetes_namespace,
        runtime_class=settings.kubernetes_runtime_class,
        seccomp_localhost=settings.kubernetes_seccomp_profile,
    )
    kubeconfig, context = settings.kubernetes_kubeconfig, settings.kubernetes_context
    return KubernetesRuntime(options, lambda: load_api_client(kubeconfig, context))


def kubernetes_sandbox(settings: HydraSettings) -> Sandbox:
    """Not yet: runs need parts this backend does not have (see docs/kubernetes.md)."""
    raise ConfigError(
        f"HYDRA_BACKEND: 'kubernetes' cannot run agents yet: it lacks {MISSING}",
        hint="use HYDRA_BACKEND=docker to run agents; with 'kubernetes', `hydra gc` and `hydra doctor` work",
    )
