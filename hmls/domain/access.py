"""What a registered cluster accepts, declared by annotations on its cluster Secret.

Pure.  By default a cluster accepts HyperMLServices from every hub namespace, but only
namespaced objects in the HyperMLService's own namespace: cluster-scoped kinds (decided from
the spoke's discovery, never from ``metadata.namespace``) and other namespaces would let a
namespace-level user of the hub escalate on the spoke, so the operator must opt in.  For the
same reason RBAC kinds (a RoleBinding to ``cluster-admin`` would be granted with hmls's own
identity) and workloads that ask for host access (privileged containers, host namespaces,
hostPath volumes, host ports) are refused unless the operator allows them, and the operator
can narrow the kinds further with allow and deny lists (as Argo CD's AppProject resource
lists).  Kinds are written as kubectl writes them: ``Kind.group`` (``Secret`` for the core
group, ``Deployment.apps``, ``*.tensorstack.dev``, ``*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ALLOWED_NAMESPACES = "hmls.tensorstack.dev/allowed-namespaces"
ALLOW_CLUSTER_SCOPED = "hmls.tensorstack.dev/allow-cluster-scoped"
ALLOW_OTHER_NAMESPACES = "hmls.tensorstack.dev/allow-other-namespaces"
ALLOWED_KINDS = "hmls.tensorstack.dev/allowed-kinds"
DENIED_KINDS = "hmls.tensorstack.dev/denied-kinds"
ALLOW_HOST_ACCESS = "hmls.tensorstack.dev/allow-host-access"
TENANCY = "hmls.tensorstack.dev/tenancy"
"""``tenant``: every write for a HyperMLService of hub namespace N impersonates N's tenant
identity, so the spoke's RBAC and admission decide; ``trusted`` (the default of a Secret
without it): writes use the registration's own credentials, under this policy."""
POD_SECURITY = "hmls.tensorstack.dev/pod-security"
"""The Pod Security level hmls labels the namespaces it creates with (default baseline)."""
RBAC_GROUP = "rbac.authorization.k8s.io"
TENANT_SERVICE_ACCOUNT = "hmls-tenant"
"""In tenant mode, the identity of hub namespace N on a spoke is the ServiceAccount
``hmls-tenant`` in namespace N there, bound (in the namespaces hmls creates) to the
ClusterRole of the same name that ``hmls cluster join`` installs."""
TENANT_ROLE = "hmls-tenant"
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")


def tenant_user(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{TENANT_SERVICE_ACCOUNT}"


def tenant_of(user: str) -> str | None:
    """The hub namespace whose tenant identity ``user`` is (``tenant_user``'s inverse)."""
    parts = user.split(":")
    return parts[2] if len(parts) == 4 and user == tenant_user(parts[2]) else None


def tenant_grant(namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """What lets the tenant of hub namespace N write in namespace N of a spoke: the
    ServiceAccount ``hmls-tenant`` there and its RoleBinding to the ClusterRole ``hmls-tenant``
    (hmls makes them in the namespaces it creates; ``hmls cluster grant`` in those the spoke's
    owner made)."""
    meta = {"name": TENANT_SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(labels)}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": TENANT_ROLE},
         "subjects": [{"kind": "ServiceAccount", "namespace": namespace,
                       "name": TENANT_SERVICE_ACCOUNT}]},
    ]


AWAITS_GRANT = "until the cluster's owner grants it"
"""In the message of an item refused in a namespace the spoke's owner made (``grant_hint``);
``hmls cluster list`` counts the items whose message has it."""


def grant_hint(cluster: str, namespace: str, tenant_namespace: str) -> str:
    """What the spoke's owner does so that the tenant of hub namespace ``tenant_namespace``
    may write in ``namespace``, a namespace of theirs on ``cluster`` (not made by hmls)."""
    grant = (f"hmls cluster grant {cluster} --namespace {namespace} --cluster-kubeconfig "
             f"<the owner's kubeconfig of {cluster}>") if namespace == tenant_namespace else (
        f"kubectl create rolebinding {TENANT_ROLE}-{tenant_namespace} --namespace {namespace} "
        f"--clusterrole={TENANT_ROLE} "
        f"--serviceaccount={tenant_namespace}:{TENANT_SERVICE_ACCOUNT}")
    return (f"namespace {namespace} on cluster {cluster} was not made by hmls, so "
            f"{tenant_user(tenant_namespace)} may not write there {AWAITS_GRANT}: {grant}")


@dataclass(frozen=True)
class KindPattern:
    kind: str
    group: str
    """"" is the core group; "*" (either part) matches anything."""

    @classmethod
    def parse(cls, text: str) -> KindPattern:
        kind, _, group = text.strip().partition(".")
        return cls(kind, "*" if kind == "*" and not group else group)

    def matches(self, kind: str, group: str) -> bool:
        return self.kind in ("*", kind) and self.group in ("*", group)

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _patterns(value: str | None) -> tuple[KindPattern, ...]:
    return tuple(KindPattern.parse(p) for p in (value or "").split(",") if p.strip())


def _kind_name(kind: str, group: str) -> str:
    return f"{kind}.{group}" if group else kind


def _pod_specs(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod specs an object carries: a Pod's, a workload's or runtime's template, a
    CronJob's job template."""
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return []
    if body.get("kind") == "Pod":
        return [spec]
    out = []
    for path in (("template", "spec"), ("jobTemplate", "spec", "template", "spec")):
        node: Any = spec
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            out.append(node)
    return out


def host_access(body: Mapping[str, Any]) -> list[str]:
    """What an object's pods ask of the node: privileged containers, host namespaces,
    hostPath volumes, host ports."""
    found: list[str] = []
    for pod in _pod_specs(body):
        found += [f"{k}: true" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k) is True]
        found += [f"hostPath volume {v.get('name')!r}" for v in pod.get("volumes") or []
                  if isinstance(v, Mapping) and v.get("hostPath") is not None]
        for group in ("initContainers", "containers", "ephemeralContainers"):
            for c in pod.get(group) or []:
                if not isinstance(c, Mapping):
                    continue
                if (c.get("securityContext") or {}).get("privileged") is True:
                    found.append(f"privileged container {c.get('name')!r}")
                found += [f"hostPort {p.get('hostPort')} of container {c.get('name')!r}"
                          for p in c.get("ports") or []
                          if isinstance(p, Mapping) and p.get("hostPort")]
    return found


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "yes", "1")


@dataclass(frozen=True)
class AccessPolicy:
    namespaces: frozenset[str] | None = None
    """Hub namespaces whose HyperMLServices may target the cluster; None means all."""
    cluster_scoped: bool = False
    other_namespaces: bool = False
    allowed_kinds: tuple[KindPattern, ...] | None = None
    """None: every kind (but RBAC) may be applied."""
    denied_kinds: tuple[KindPattern, ...] = ()
    host_access: bool = False
    tenant: bool = False
    pod_security: str = "baseline"

    def writer(self, owner_namespace: str) -> str | None:
        """The identity writes for a HyperMLService of this hub namespace impersonate (None:
        the registration's own)."""
        return tenant_user(owner_namespace) if self.tenant else None

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> AccessPolicy:
        ann = annotations or {}
        raw = ann.get(ALLOWED_NAMESPACES, "*").strip()
        names = frozenset(n.strip() for n in raw.split(",") if n.strip())
        allowed = _patterns(ann.get(ALLOWED_KINDS))
        return cls(namespaces=None if not names or "*" in names else names,
                   cluster_scoped=_true(ann.get(ALLOW_CLUSTER_SCOPED)),
                   other_namespaces=_true(ann.get(ALLOW_OTHER_NAMESPACES)),
                   allowed_kinds=allowed if ALLOWED_KINDS in ann else None,
                   denied_kinds=_patterns(ann.get(DENIED_KINDS)),
                   host_access=_true(ann.get(ALLOW_HOST_ACCESS)),
                   tenant=ann.get(TENANCY, "").strip().lower() == "tenant",
                   pod_security=level if (level := ann.get(POD_SECURITY, "").strip().lower())
                   in POD_SECURITY_LEVELS else "baseline")

    def refuse_owner(self, cluster: str, namespace: str) -> str | None:
        if self.namespaces is None or namespace in self.namespaces:
            return None
        return (f"cluster {cluster} does not accept HyperMLServices from namespace {namespace} "
                f"(its Secret's {ALLOWED_NAMESPACES}: {', '.join(sorted(self.namespaces))})")

    def refuse_object(self, cluster: str, *, kind: str, namespaced: bool, namespace: str,
                      owner_namespace: str, api_version: str,
                      body: Mapping[str, Any] | None = None) -> str | None:
        """Why this object may not be applied to the cluster (which rule), or None."""
        if not namespaced and not self.cluster_scoped:
            return (f"{kind} is cluster-scoped on cluster {cluster}; refused unless the cluster "
                    f"Secret has {ALLOW_CLUSTER_SCOPED}: \"true\"")
        if namespaced and namespace != owner_namespace and not self.other_namespaces:
            return (f"namespace {namespace} differs from the HyperMLService's namespace "
                    f"{owner_namespace}; refused unless the cluster Secret of {cluster} has "
                    f"{ALLOW_OTHER_NAMESPACES}: \"true\"")
        group = api_version.rpartition("/")[0]
        name = _kind_name(kind, group)
        denied = next((p for p in self.denied_kinds if p.matches(kind, group)), None)
        if denied is not None:
            return f"{name} is refused on cluster {cluster} by its Secret's {DENIED_KINDS} ({denied})"
        if self.allowed_kinds is not None and not any(p.matches(kind, group)
                                                      for p in self.allowed_kinds):
            listed = ", ".join(map(str, self.allowed_kinds)) or "nothing"
            return (f"{name} is not among the kinds cluster {cluster} accepts (its Secret's "
                    f"{ALLOWED_KINDS}: {listed})")
        if self.tenant:
            return None  # the spoke's RBAC (escalation prevention) and admission decide
        if group == RBAC_GROUP and not any(p.group == RBAC_GROUP and p.matches(kind, group)
                                           for p in self.allowed_kinds or ()):
            return (f"{name} is refused on cluster {cluster}: hmls would grant it with its own "
                    f"credentials; name it in the cluster Secret's {ALLOWED_KINDS} to allow it")
        asks = host_access(body or {})
        if asks and not self.host_access:
            return (f"{kind} asks for host access on cluster {cluster} ({', '.join(asks)}); "
                    f"refused unless the cluster Secret has {ALLOW_HOST_ACCESS}: \"true\"")
        return None
