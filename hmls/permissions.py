"""The one permission table: what hmls may do on the hub and on a spoke, each rule with why.

Three things read it and none keeps a list of its own:

- ``config/rbac`` (and the Helm chart, which tests/integration/test_chart.py holds to
  config/default): the controller's ClusterRole and Role on the hub, ``HUB_CLUSTER`` and
  ``HUB_NAMESPACE`` (tests/unit/test_permissions.py fails when a file and the table differ);
- ``hmls cluster join`` mints hmls's identity on a spoke with ``spoke(tenant=…)`` as its
  ClusterRole and ``TENANT`` as the tenants' (``hmls.identity``);
- join then checks, with SelfSubjectAccessReviews, that the stored credentials may do every
  verb of ``spoke(tenant=…)`` (``checks``), so a kubeconfig stored as is must hold what the
  minted identity would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hmls.domain.access import RBAC_GROUP, TENANT_ROLE, TENANT_SERVICE_ACCOUNT

READ = ("get", "list", "watch")
WRITE = ("create", "patch", "delete")


@dataclass(frozen=True)
class Rule:
    """One PolicyRule: ``verbs`` on ``resources`` of ``group`` (limited to ``names`` if any)."""

    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    names: tuple[str, ...] = ()

    def policy_rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"apiGroups": [self.group], "resources": list(self.resources)}
        if self.names:
            rule["resourceNames"] = list(self.names)
        rule["verbs"] = list(self.verbs)
        return rule


@dataclass(frozen=True)
class Access:
    """One verb on one resource (and name): a SelfSubjectAccessReview's question."""

    verb: str
    group: str
    resource: str
    name: str = ""

    def attributes(self) -> dict[str, str]:
        attrs = {"verb": self.verb, "group": self.group, "resource": self.resource}
        if self.name:
            attrs["name"] = self.name
        return attrs

    def target(self) -> str:
        if self.resource == "*":
            return "every kind"
        return (self.resource + (f".{self.group}" if self.group else "")
                + (f" ({self.name})" if self.name else ""))


HUB_CLUSTER: tuple[Rule, ...] = (
    Rule("tensorstack.dev", ("hypermlservices",), ("get", "list", "watch", "patch"),
         "informers (list/watch) and the finalizer merge-patch on the object itself"),
    Rule("tensorstack.dev", ("hypermlservices/status",), ("patch",),
         "status.aggregatedStatus / conditions (merge-patch on the status subresource)"),
    Rule("", ("events",), ("create",),
         "ApplyFailed, Pruned, CleanedUp, CleanupPending, Orphaned, rollout and analysis "
         "events next to each HyperMLService (repeats are suppressed in the controller)"),
    Rule("multicluster.x-k8s.io", ("clusterprofiles",), ("list", "watch"),
         "cluster names, labels and health from SIG-Multicluster ClusterProfiles, where the "
         "hub serves them (read only; credentials come only from the registration Secrets)"),
    Rule("apps", ("controllerrevisions",), ("list", "create", "patch", "delete"),
         "progressive rollout: workload revisions as ControllerRevisions next to each "
         "HyperMLService"),
)
"""The controller's ClusterRole on the hub (config/rbac/cluster_role.yaml): HyperMLServices
live in any namespace."""

HUB_NAMESPACE: tuple[Rule, ...] = (
    Rule("", ("secrets",), READ,
         "cluster registrations: Secrets labelled hmls.tensorstack.dev/cluster (read only; "
         "`hmls cluster join` writes them with the operator's own credentials)"),
    Rule("", ("configmaps",), ("create",),
         "each cluster's health probe verdict, for `hmls cluster list`: the ConfigMap "
         "hmls-cluster-health, written only when a verdict changes"),
    Rule("", ("configmaps",), ("get", "patch"), "read and update that ConfigMap only",
         names=("hmls-cluster-health",)),
    Rule("coordination.k8s.io", ("leases",), ("create",),
         "leader election (--leader-elect): the Lease hmls-controller. `create` cannot be "
         "limited to a name (the name is not known when a create is authorized); get and "
         "update are. With --shards N, the shard Leases hmls-controller-shard-<i> need get "
         "and update too (the Helm chart adds them from its `shards` value)"),
    Rule("coordination.k8s.io", ("leases",), ("get", "update"), "hold and renew that Lease only",
         names=("hmls-controller",)),
)
"""The controller's Role in its own namespace on the hub (config/rbac/role.yaml)."""

MANAGED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tensorstack.dev", ("mlservices", "mlserviceruntimes")),
    ("", ("secrets", "configmaps", "services", "serviceaccounts")),
    ("apps", ("deployments",)),
    ("networking.istio.io", ("serviceentries", "virtualservices")),
    ("gateway.networking.k8s.io", ("httproutes",)),
)
"""The kinds hmls watches (and, trusted, writes) on a spoke; grant more with another
ClusterRoleBinding to its ServiceAccount."""

_NAMESPACES = Rule("", ("namespaces",), (*READ, "create"),
                   "the namespaces of a workload's objects, made when missing")

TRUSTED: tuple[Rule, ...] = (
    *(Rule(group, resources, READ + WRITE, "apply, watch and prune the managed kinds")
      for group, resources in MANAGED),
    _NAMESPACES,
)
"""hmls's ClusterRole on a trusted spoke: it writes with its own identity."""

TENANT_MODE: tuple[Rule, ...] = (
    Rule("*", ("*",), READ, "watch whatever the tenants apply (writes go as the tenant)"),
    _NAMESPACES,
    Rule("", ("serviceaccounts",), ("impersonate",), "write as a hub namespace's tenant",
         names=(TENANT_SERVICE_ACCOUNT,)),
    Rule("", ("serviceaccounts",), ("create",),
         "the tenant's identity in the namespaces hmls creates"),
    Rule(RBAC_GROUP, ("rolebindings",), ("create",),
         "the tenant's RoleBinding in the namespaces hmls creates"),
    Rule(RBAC_GROUP, ("clusterroles",), ("bind",), "bind the tenant's ClusterRole",
         names=(TENANT_ROLE,)),
)
"""hmls's ClusterRole on a tenant-mode spoke: it reads everything and writes as the tenants."""

TENANT: tuple[Rule, ...] = tuple(
    Rule(group, resources, (*READ, *WRITE, "update"), "a namespace admin's work")
    for group, resources in (
        *MANAGED, ("", ("pods", "persistentvolumeclaims")),
        ("apps", ("statefulsets", "replicasets")), ("batch", ("jobs", "cronjobs")),
        (RBAC_GROUP, ("roles", "rolebindings"))))
"""The ClusterRole ``hmls-tenant``: what a tenant may do in a namespace hmls created for it
(or one a ``hmls cluster grant`` opened); a RoleBinding can grant only what the tenant itself
holds (Kubernetes' escalation prevention), and Pods meet the namespace's Pod Security level."""


def spoke(*, tenant: bool) -> tuple[Rule, ...]:
    return TENANT_MODE if tenant else TRUSTED


def checks(rules: tuple[Rule, ...]) -> list[Access]:
    """Every (verb, resource, name) the rules grant: what join asks the cluster about."""
    return [Access(verb, rule.group, resource, name)
            for rule in rules for resource in rule.resources
            for name in (rule.names or ("",)) for verb in rule.verbs]


def describe(missing: list[Access]) -> str:
    """``get, list, watch mlservices.tensorstack.dev; create namespaces`` (the table's order)."""
    by_target: dict[str, list[str]] = {}
    for access in missing:
        by_target.setdefault(access.target(), []).append(access.verb)
    return "; ".join(f"{', '.join(verbs)} {target}" for target, verbs in by_target.items())
