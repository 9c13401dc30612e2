"""What a registered cluster accepts, declared by annotations on its cluster Secret.

Pure.  By default a cluster accepts HyperMLServices from every hub namespace, but only
namespaced objects in the HyperMLService's own namespace: cluster-scoped kinds (decided from
the spoke's discovery, never from ``metadata.namespace``) and other namespaces would let a
namespace-level user of the hub escalate on the spoke, so the operator must opt in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ALLOWED_NAMESPACES = "hmls.tensorstack.dev/allowed-namespaces"
ALLOW_CLUSTER_SCOPED = "hmls.tensorstack.dev/allow-cluster-scoped"
ALLOW_OTHER_NAMESPACES = "hmls.tensorstack.dev/allow-other-namespaces"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "yes", "1")


@dataclass(frozen=True)
class AccessPolicy:
    namespaces: frozenset[str] | None = None
    """Hub namespaces whose HyperMLServices may target the cluster; None means all."""
    cluster_scoped: bool = False
    other_namespaces: bool = False

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> AccessPolicy:
        ann = annotations or {}
        raw = ann.get(ALLOWED_NAMESPACES, "*").strip()
        names = frozenset(n.strip() for n in raw.split(",") if n.strip())
        return cls(namespaces=None if not names or "*" in names else names,
                   cluster_scoped=_true(ann.get(ALLOW_CLUSTER_SCOPED)),
                   other_namespaces=_true(ann.get(ALLOW_OTHER_NAMESPACES)))

    def refuse_owner(self, cluster: str, namespace: str) -> str | None:
        if self.namespaces is None or namespace in self.namespaces:
            return None
        return (f"cluster {cluster} does not accept HyperMLServices from namespace {namespace} "
                f"(its Secret's {ALLOWED_NAMESPACES}: {', '.join(sorted(self.namespaces))})")

    def refuse_object(self, cluster: str, *, kind: str, namespaced: bool, namespace: str,
                      owner_namespace: str) -> str | None:
        if not namespaced and not self.cluster_scoped:
            return (f"{kind} is cluster-scoped on cluster {cluster}; refused unless the cluster "
                    f"Secret has {ALLOW_CLUSTER_SCOPED}: \"true\"")
        if namespaced and namespace != owner_namespace and not self.other_namespaces:
            return (f"namespace {namespace} differs from the HyperMLService's namespace "
                    f"{owner_namespace}; refused unless the cluster Secret of {cluster} has "
                    f"{ALLOW_OTHER_NAMESPACES}: \"true\"")
        return None
