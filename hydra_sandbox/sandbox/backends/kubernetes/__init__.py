"""The Kubernetes backend: an agent as a hardened pod in one namespace, isolated by NetworkPolicies.

:mod:`.manifests` translates the neutral spec into the Pod and NetworkPolicy manifests (pure),
:mod:`.exec_transport` moves the workspace in and out over ``pods/exec`` (:mod:`.exec_channels` frames
it), :mod:`.gateway_manifests` and :mod:`.gateway_pods` place a session's gateway in a pod of its own,
:mod:`.runtime` implements the :class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime` with the official
``kubernetes`` client (the optional extra ``hydra-sandbox[kubernetes]``), and :mod:`.egress` runs each
session's gateway pod; :func:`kubernetes_sandbox` puts them together behind the shared orchestrator.
docs/kubernetes.md says what is built, what Kubernetes cannot express, and what was tested without a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_sandbox.errors import ConfigError

if TYPE_CHECKING:
    from hydra_sandbox.agent_endpoint import AgentEndpoint
    from hydra_sandbox.masking import SecretMasker
    from hydra_sandbox.sandbox.backends.kubernetes.exec_transport import ExecOpener
    from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime
    from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator
    from hydra_sandbox.settings import HydraSettings

NAME = "kubernetes"


def kubernetes_runtime(settings: HydraSettings) -> KubernetesRuntime:
    """The Kubernetes runtime alone (``hydra gc``, ``hydra doctor``); the client connects on first use. With
    ``HYDRA_KUBERNETES_WARM_POOL``, the runtime that claims agent pods from that pool (:mod:`.warm_runtime`)."""
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
    if settings.kubernetes_warm_pool is not None:
        from hydra_sandbox.sandbox.backends.kubernetes.warm_runtime import WarmPoolRuntime

        return WarmPoolRuntime(options, settings.kubernetes_warm_pool, lambda: load_api_client(kubeconfig, context))
    return KubernetesRuntime(options, lambda: load_api_client(kubeconfig, context))


def kubernetes_sandbox(
    settings: HydraSettings,
    masker: SecretMasker,
    agent_endpoint: AgentEndpoint | None = None,
    *,
    runtime: KubernetesRuntime | None = None,
    open_exec: ExecOpener | None = None,
) -> SandboxOrchestrator:
    """The sandbox that runs agents as pods: the runtime, the workspace over ``pods/exec``
    (:class:`~.exec_transport.PodExecTransport`) and a gateway pod per session
    (:class:`~.egress.KubernetesEgress`). ``runtime`` and ``open_exec`` replace the cluster's (tests)."""
    runtime = runtime or kubernetes_runtime(settings)
    from hydra_sandbox.sandbox.backends.kubernetes.egress import KubernetesEgress
    from hydra_sandbox.sandbox.backends.kubernetes.exec_transport import PodExecTransport, kubernetes_exec
    from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
    from hydra_sandbox.sandbox.spec import home_label

    kube = runtime
    opener = open_exec or kubernetes_exec(lambda: kube.api_client, kube.ns)
    transport = PodExecTransport(opener)
    from hydra_sandbox.sandbox.backends.kubernetes.warm_runtime import WarmPoolRuntime

    if isinstance(runtime, WarmPoolRuntime):
        runtime.use_exec(opener)  # the launch script goes in the way the workspace does
    egress = KubernetesEgress(runtime, settings.gateway_image, home=home_label(settings.data_home))
    host = f"kubernetes:{runtime.ns}"
    return SandboxOrchestrator(settings, masker, Backend(NAME, runtime, transport, egress, host), agent_endpoint)
