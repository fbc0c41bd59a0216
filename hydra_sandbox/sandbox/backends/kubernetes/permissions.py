"""What Hydra's account must be allowed in the agents' namespace, asked of the cluster itself
(``SelfSubjectAccessReview``, which every authenticated account may create), so ``hydra doctor`` names
each missing right before a run fails on it. :data:`NEEDED` is the Helm chart's Role
(deploy/helm/hydra/templates/rbac.yaml); a test keeps the two equal."""

from __future__ import annotations

import asyncio

from kubernetes import client as k8s
from pydantic import BaseModel, ConfigDict

from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime


class Permission(BaseModel):
    """One verb on one resource (or subresource) of an API group, in the agents' namespace."""

    model_config = ConfigDict(frozen=True)

    verb: str
    resource: str
    subresource: str = ""
    group: str = ""

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {what}" + (f" ({self.group})" if self.group else "")


def _rights(resource: str, verbs: str, *, subresource: str = "", group: str = "") -> list[Permission]:
    return [Permission(verb=v, resource=resource, subresource=subresource, group=group) for v in verbs.split()]


NEEDED: tuple[Permission, ...] = (
    *_rights("pods", "create get list watch delete"),
    *_rights("pods", "get", subresource="log"),
    *_rights("pods", "create get", subresource="exec"),
    *_rights("secrets", "create delete"),
    *_rights("networkpolicies", "create get list watch delete", group="networking.k8s.io"),
)


WARM_POOL_NEEDED: tuple[Permission, ...] = (
    *_rights("pods", "patch"),
    *_rights("sandboxclaims", "create get list delete", group="extensions.agents.x-k8s.io"),
    *_rights("sandboxes", "get", group="agents.x-k8s.io"),
)
"""What claiming from a warm pool adds (the chart's Role with ``kubernetes.warmPool`` set)."""


def needed(runtime: KubernetesRuntime) -> tuple[Permission, ...]:
    """The rights ``runtime`` uses: :data:`NEEDED`, and :data:`WARM_POOL_NEEDED` when it claims from a pool."""
    from hydra_sandbox.sandbox.backends.kubernetes.warm_runtime import WarmPoolRuntime

    return NEEDED + WARM_POOL_NEEDED if isinstance(runtime, WarmPoolRuntime) else NEEDED


async def missing_permissions(runtime: KubernetesRuntime) -> list[Permission]:
    """The rights of :func:`needed` the cluster says this account does not have in ``runtime``'s
    namespace (asked all at once)."""
    api = k8s.AuthorizationV1Api(runtime.api_client)

    async def allowed(permission: Permission) -> bool:
        attributes = k8s.V1ResourceAttributes(
            namespace=runtime.ns,
            verb=permission.verb,
            resource=permission.resource,
            subresource=permission.subresource or None,
            group=permission.group,
        )
        review = k8s.V1SelfSubjectAccessReview(spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes))
        answer = await runtime.call(f"ask whether it may {permission}", api.create_self_subject_access_review, review)
        return bool(answer.status is not None and answer.status.allowed)

    wanted = needed(runtime)
    answers = await asyncio.gather(*(allowed(p) for p in wanted))
    return [p for p, ok in zip(wanted, answers, strict=True) if not ok]
