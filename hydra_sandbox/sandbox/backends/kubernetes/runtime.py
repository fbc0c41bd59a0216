"""The :class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime` on the official ``kubernetes`` client:
one agent container is one Pod in one namespace (a setting). Every blocking call runs in a worker thread
(at most ``max_threads`` at once); the client's errors become
:class:`~hydra_sandbox.errors.RuntimeUnavailableError` naming the pod and what Kubernetes said.

How the seam maps (docs/kubernetes.md has the whole table):

- ``create`` makes sure the namespace's default-deny NetworkPolicy exists (and the session's gateway
  allowance when the spec has a gateway), then creates the Pod: Kubernetes starts a pod as soon as it is
  scheduled, so the pod never exists without its policies. ``start`` only checks that the pod exists.
- ``stop`` deletes the pod with the grace period (SIGTERM, then SIGKILL), ``kill`` with none; the last
  state seen of a pod stays readable by ``inspect`` and ``wait`` after it is gone. ``remove`` deletes with
  no grace; a pod already gone is not an error for any of them.
- ``wait`` watches the pod until its agent container terminated (or the pod failed as a whole).
- Networks are the session's NetworkPolicies (listed and removed by ``hydra gc``); Kubernetes has no
  network to create. A named volume becomes an emptyDir that lives as long as the pod that mounts it.
- Images: a cluster cannot say which node has an image or whether a registry serves it before a pod
  pulls it, so ``image_exists`` answers True ("the cluster will pull it") and ``image_info`` None; a pod
  whose image cannot be pulled reports ``ErrImagePull`` / ``ImagePullBackOff`` as its error.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError
from hydra_sandbox.sandbox.backends.kubernetes.logs import follow_pod_logs
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    AGENT_CONTAINER,
    PodOptions,
    default_deny_policy,
    gateway_policy,
    pod_manifest,
)
from hydra_sandbox.sandbox.backends.kubernetes.pods import GONE_EXIT_CODE, container_info, exit_code, finished, started
from hydra_sandbox.sandbox.spec import (
    LABEL_SESSION,
    ContainerInfo,
    ContainerSpec,
    ImageInfo,
    LogStream,
    NetworkInfo,
    VolumeInfo,
)

WATCH_WINDOW_S = 30
"""Longest single watch request; ``wait`` watches again until its own timeout."""


def load_api_client(kubeconfig: Path | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client for the cluster: in-cluster (the pod's service account) unless a kubeconfig or context
    is given, else ``kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``."""
    configuration = k8s.Configuration()
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except ConfigException:
            pass
    try:
        k8s_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context, client_configuration=configuration
        )
    except (ConfigException, OSError) as exc:
        raise RuntimeUnavailableError(
            f"no Kubernetes cluster configured: {exc}",
            hint="run Hydra in the cluster (the Helm chart), or set KUBECONFIG / HYDRA_KUBERNETES_KUBECONFIG",
        ) from None
    return k8s.ApiClient(configuration)


def _selector(labels: dict[str, str]) -> str:
    """A label selector; an empty selection means everything Hydra labelled."""
    return ",".join(f"{k}={v}" for k, v in labels.items()) or LABEL_SESSION


def _matches(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    """The selector again on our side: what Hydra removes is checked here, not only by the server."""
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items()) if labels else LABEL_SESSION in have


def raw_call(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call``'s raw HTTP response (JSON left undecoded, streams left open): Hydra reads dicts, not the
    client's models, so a field the models do not know is never dropped."""
    return call(*args, _preload_content=False, **kwargs)


def _said(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


class KubernetesRuntime:
    def __init__(
        self,
        options: PodOptions,
        api_client: Callable[[], k8s.ApiClient] = load_api_client,
        *,
        max_threads: int = 16,
        watch_window_s: float = WATCH_WINDOW_S,
    ) -> None:
        self.watch_window_s = watch_window_s
        self.options = options
        self._connect = api_client
        self._client: k8s.ApiClient | None = None
        self._client_lock = threading.Lock()
        self._limit = asyncio.Semaphore(max_threads)
        self._last_seen: dict[str, dict[str, Any]] = {}
        self._policy_ready = False

    @property
    def api_client(self) -> k8s.ApiClient:
        with self._client_lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    @property
    def networking(self) -> k8s.NetworkingV1Api:
        return k8s.NetworkingV1Api(self.api_client)

    @property
    def ns(self) -> str:
        return self.options.namespace

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async with self._limit:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except ApiException as exc:
                raise RuntimeUnavailableError(
                    f"Kubernetes refused to {what} in namespace {self.ns}: {exc.status} {_said(exc)}",
                    hint="the server's account needs the Role of docs/kubernetes.md in that namespace",
                ) from None
            except (OSError, urllib3.exceptions.HTTPError, ConfigException) as exc:
                raise RuntimeUnavailableError(
                    f"cannot reach the Kubernetes API server to {what}: {exc}",
                    hint="check the kubeconfig or the in-cluster service account",
                ) from None

    def _json(self, response: Any) -> Any:
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    # -- pods --------------------------------------------------------------------------------

    def _read_pod(self, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it (and remembered), or None when it is gone."""
        try:
            pod: dict[str, Any] = self._json(raw_call(self.core.read_namespaced_pod, name, self.ns))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self._last_seen[name] = pod
        return pod

    def create_ignoring_conflict(self, create: Callable[..., Any], body: dict[str, Any]) -> None:
        try:
            raw_call(create, self.ns, body).release_conn()
        except ApiException as exc:
            if exc.status != 409:  # already there: ours, by name
                raise

    def _ensure_policies(self, spec: ContainerSpec) -> None:
        create = self.networking.create_namespaced_network_policy
        if not self._policy_ready:
            self.create_ignoring_conflict(create, default_deny_policy(self.options))
            self._policy_ready = True
        session = spec.labels.get(LABEL_SESSION)
        if spec.network_mode != "none" and session:
            self.create_ignoring_conflict(create, gateway_policy(session, spec.labels, self.options))

    async def create(self, spec: ContainerSpec) -> str:
        manifest = pod_manifest(spec, self.options)  # refuses an unhardened spec before any request
        name = str(manifest["metadata"]["name"])

        def _create() -> None:
            self._ensure_policies(spec)
            raw_call(self.core.create_namespaced_pod, self.ns, manifest).release_conn()

        await self.call(f"create pod {name}", _create)
        return name

    async def start(self, container_id: str) -> None:
        """A pod starts when it is created; this only checks that it still exists."""
        if await self.call(f"read pod {container_id}", self._read_pod, container_id) is None:
            raise RuntimeUnavailableError(f"pod {container_id} in namespace {self.ns} is gone: it cannot start")

    def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
        """The pod's output from its start, following until it exits (see :mod:`.logs`)."""
        return follow_pod_logs(self, container_id)

    def wait_started(self, pod: str) -> bool | None:
        found = self._watch(pod, self.watch_window_s, until=started)
        if found is None:
            return False  # still waiting to start
        return True if found and started(found) else None  # gone: ran before, or never ran

    def open_log(self, pod: str, follow: bool, container: str = AGENT_CONTAINER) -> Any:
        """The timestamped log of the pod's ``container``; None when the pod is gone or it never ran."""
        try:
            read = self.core.read_namespaced_pod_log
            return raw_call(read, pod, self.ns, container=container, follow=follow, timestamps=True)
        except ApiException as exc:
            if exc.status in {404, 400}:  # gone, or ended without ever running: no log to read
                return None
            raise

    def pod_running(self, pod: str) -> bool:
        found = self._read_pod(pod)
        return found is not None and not finished(found)

    def read_pod(self, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it, or None when it is gone (blocking: run it through :meth:`call`)."""
        return self._read_pod(name)

    def watch(self, name: str, window_s: float, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """:meth:`_watch` for the backend's other pods (the gateway's); blocking."""
        return self._watch(name, window_s, until)

    def _watch(self, name: str, window_s: float, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The pod once ``until`` holds for it, ``{}`` (or its last state) once it is gone, or None when
        ``window_s`` passed first."""
        pod = self._read_pod(name)
        if pod is None or until(pod):
            return pod if pod is not None else self._last_seen.get(name, {})
        response = raw_call(
            self.core.list_namespaced_pod,
            self.ns,
            field_selector=f"metadata.name={name}",
            resource_version=pod.get("metadata", {}).get("resourceVersion"),  # no change between read and watch lost
            watch=True,
            timeout_seconds=max(int(window_s), 1),
            _request_timeout=(10, window_s + 1),  # the server ends the watch at timeoutSeconds; a backstop
        )
        try:
            for line in response:  # one JSON event per line
                event = json.loads(line)
                obj = event.get("object") or {}
                if obj.get("metadata", {}).get("name") != name:
                    continue  # the field selector again on our side
                self._last_seen[name] = obj
                if event.get("type") == "DELETED" or until(obj):
                    return obj
        except urllib3.exceptions.ReadTimeoutError:  # quiet for the whole window
            pass
        finally:
            response.close()
        return None

    async def wait(self, container_id: str, timeout_s: float | None = None) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            window = self.watch_window_s if deadline is None else min(WATCH_WINDOW_S, deadline - loop.time())
            if window <= 0:
                return None
            pod = await self.call(f"watch pod {container_id}", self._watch, container_id, window, finished)
            if pod is not None:
                return exit_code(pod) if pod else GONE_EXIT_CODE

    def delete_pod(self, name: str, grace_s: int) -> None:
        try:
            raw_call(
                self.core.delete_namespaced_pod,
                name,
                self.ns,
                grace_period_seconds=grace_s,
                propagation_policy="Background",
            ).release_conn()
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """Delete the pod: SIGTERM, then SIGKILL after ``grace_s``. A pod already gone is stopped."""
        await self.call(f"delete pod {container_id}", self.delete_pod, container_id, max(int(grace_s), 1))

    async def kill(self, container_id: str) -> None:
        await self.call(f"delete pod {container_id}", self.delete_pod, container_id, 0)

    async def inspect(self, container_id: str) -> ContainerInfo:
        pod = await self.call(f"read pod {container_id}", self._read_pod, container_id)
        if pod is None:
            last = self._last_seen.get(container_id)
            if last is None:
                raise RuntimeUnavailableError(f"pod {container_id} not found in namespace {self.ns}")
            return container_info(last).model_copy(update={"status": "removed"})
        return container_info(pod)

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        def _list() -> list[dict[str, Any]]:
            found = raw_call(self.core.list_namespaced_pod, self.ns, label_selector=_selector(labels))
            return [p for p in self._json(found).get("items", []) if _matches(p, labels)]

        return [container_info(p) for p in await self.call("list pods", _list)]

    async def remove(self, container_id: str) -> None:
        await self.call(f"delete pod {container_id}", self.delete_pod, container_id, 0)
        self._last_seen.pop(container_id, None)

    # -- volumes: emptyDirs that live with their pod -----------------------------------------

    async def create_volume(self, name: str, labels: dict[str, str]) -> str:
        """Nothing to create: the pod that mounts ``name`` gets an emptyDir that lives as long as it."""
        return name

    async def remove_volume(self, name: str) -> None:
        """Nothing to remove: an emptyDir goes with its pod."""

    async def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        return []  # this backend creates no volume outside a pod

    # -- networks: the sessions' NetworkPolicies ---------------------------------------------

    async def create_network(self, name: str, labels: dict[str, str], internal: bool = True) -> str:
        raise ConfigError(
            f"network {name}: the Kubernetes backend creates no networks",
            hint="pods share the cluster's network; a session is isolated by its NetworkPolicies, "
            "which creating its agent pod sets up",
        )

    async def remove_network(self, name: str) -> None:
        def _remove() -> None:
            try:
                raw_call(self.networking.delete_namespaced_network_policy, name, self.ns).release_conn()
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await self.call(f"delete network policy {name}", _remove)

    async def list_networks(self, labels: dict[str, str]) -> list[NetworkInfo]:
        def _list() -> list[dict[str, Any]]:
            found = raw_call(self.networking.list_namespaced_network_policy, self.ns, label_selector=_selector(labels))
            return [p for p in self._json(found).get("items", []) if _matches(p, labels)]

        policies = await self.call("list network policies", _list)
        return [
            NetworkInfo(id=p["metadata"]["name"], name=p["metadata"]["name"], labels=p["metadata"].get("labels") or {})
            for p in policies
        ]

    # -- images: the cluster pulls them ------------------------------------------------------

    async def image_exists(self, tag: str) -> bool:
        """True: the cluster pulls ``tag`` when a pod starts; only then is it known whether it can."""
        return True

    async def image_info(self, tag: str) -> ImageInfo | None:
        """None: no node's image store is readable through the API server."""
        return None
