"""The Kubernetes backend: an agent as a hardened pod in one namespace, isolated by NetworkPolicies.

:mod:`.manifests` translates the neutral spec into the Pod and NetworkPolicy manifests (pure),
:mod:`.runtime` implements the :class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime` with the official
``kubernetes`` client (the optional extra ``hydra-sandbox[kubernetes]``). docs/kubernetes.md says what is
built, what Kubernetes cannot express, and what was tested without a cluster.
"""
