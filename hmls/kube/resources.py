"""Where kinds are served, and the few resources the controller itself reads and writes.

A ``Resource`` is what discovery says about one kind; the constants below are the kinds
hmls uses on the hub and on every cluster, named once here for every layer above.
"""

from __future__ import annotations

from dataclasses import dataclass

from hmls.domain.models import API_VERSION, KIND, PLURAL


@dataclass(frozen=True)
class Resource:
    """Where a kind is served: ``/apis/<group>/<version>/[namespaces/<ns>/]<plural>``."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


HMLS = Resource(API_VERSION, KIND, PLURAL, namespaced=True)
SECRETS = Resource("v1", "Secret", "secrets", namespaced=True)
CONFIGMAPS = Resource("v1", "ConfigMap", "configmaps", namespaced=True)
NAMESPACES = Resource("v1", "Namespace", "namespaces", namespaced=False)
EVENTS = Resource("v1", "Event", "events", namespaced=True)
SERVICE_ACCOUNTS = Resource("v1", "ServiceAccount", "serviceaccounts", namespaced=True)
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings",
                         namespaced=True)
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles",
                         namespaced=False)
LEASES = Resource("coordination.k8s.io/v1", "Lease", "leases", namespaced=True)
CLUSTER_PROFILES = Resource("multicluster.x-k8s.io/v1alpha1", "ClusterProfile", "clusterprofiles",
                            namespaced=True)
"""SIG-Multicluster's cluster inventory (KEP-4322), read where the hub serves it."""
CONTROLLER_REVISIONS = Resource("apps/v1", "ControllerRevision", "controllerrevisions",
                                namespaced=True)
"""A HyperMLService's workload revisions (progressive rollout), as Deployments keep theirs."""
