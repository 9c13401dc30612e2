"""Desired objects per cluster: defaults, owner labels, content hash, dependency order.

Pure.  ``render`` turns a spec into a flat list of ``Desired`` items in the order users
wrote them (workload, cluster, manifest) — the order of ``status.aggregatedStatus`` — and
``apply_order`` sorts one cluster's items into the order they must be applied.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hmls.domain.models import (
    HASH_ANNOTATION,
    OWNER_NAME,
    OWNER_NAMESPACE,
    OWNER_UID,
    Owner,
    Spec,
    Workload,
)
from hmls.domain.patch import PatchError, json_patch, merge_patch, substitute
from hmls.domain.wire import text

# Kinds that are cluster-scoped in every Kubernetes: their namespace is never defaulted.
# (The applier decides scope from each cluster's discovery; this only shapes the default.)
CLUSTER_SCOPED = frozenset({
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
    "PersistentVolume", "StorageClass", "PriorityClass", "APIService",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "IngressClass",
    "RuntimeClass", "CSIDriver", "Node",
})

_RANK = {
    "Namespace": 0, "CustomResourceDefinition": 0,
    "Secret": 1, "ConfigMap": 1, "ServiceAccount": 1,
    "MLServiceRuntime": 2,
}
LAST_RANK = 3
"""MLService and everything else."""


@dataclass(frozen=True, order=True)
class ResourceRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    def to_status(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out

    @classmethod
    def from_status(cls, raw: Any) -> ResourceRef:
        """A stored ``resource``, read (anything but an object is an empty reference)."""
        if not isinstance(raw, Mapping):
            return cls("", "", "", "")
        return cls(text(raw.get("apiVersion")), text(raw.get("kind")),
                   text(raw.get("namespace")), text(raw.get("name")))

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Desired:
    cluster: str
    ref: ResourceRef
    body: dict[str, Any]
    hash: str
    rank: int
    error: str | None = None
    """Set when the manifest cannot be applied at all (duplicate...); body is then unused."""


def label_value(text: str) -> str:
    """A label value (≤ 63 chars); long names keep a prefix and a hash for uniqueness."""
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[:52].rstrip('-_.')}-{digest}"


def owner_labels(owner: Owner) -> dict[str, str]:
    return {
        OWNER_NAMESPACE: owner.namespace,
        OWNER_NAME: label_value(owner.name),
        OWNER_UID: owner.uid,
    }


def content_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _prepare(manifest: dict[str, Any], owner: Owner) -> tuple[ResourceRef, dict[str, Any]]:
    body = copy.deepcopy(manifest)
    if not isinstance(body.get("metadata"), dict):
        body["metadata"] = {}
    meta = body["metadata"]
    for server_owned in ("resourceVersion", "uid", "creationTimestamp", "generation",
                         "managedFields", "selfLink", "deletionTimestamp"):
        meta.pop(server_owned, None)
    body.pop("status", None)
    kind = str(body.get("kind", ""))
    if kind == "Secret" and body.get("apiVersion") == "v1":
        _string_data_to_data(body)
    if kind not in CLUSTER_SCOPED and not meta.get("namespace"):
        meta["namespace"] = owner.namespace
    meta["labels"] = {**(meta.get("labels") or {}), **owner_labels(owner)}
    ref = ResourceRef(str(body.get("apiVersion", "")), kind,
                      str(meta.get("namespace") or ""), str(meta.get("name", "")))
    return ref, body


def _string_data_to_data(secret: dict[str, Any]) -> None:
    """Apply a Secret's ``stringData`` as the ``data`` the server would store (stringData wins
    over data, as on the server), so that hmls owns the stored fields and a change to them on
    a spoke is seen as drift.  Anything but a map of strings is left for the server to refuse."""
    string_data = secret.get("stringData")
    data = secret.get("data") if secret.get("data") is not None else {}
    if not (isinstance(string_data, dict) and isinstance(data, dict)
            and all(isinstance(v, str) for v in string_data.values())):
        return
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()}
    secret["data"] = {**data, **encoded}
    del secret["stringData"]


def _hashed(cluster: str, ref: ResourceRef, body: dict[str, Any], rank: int,
            error: str | None = None) -> Desired:
    labelled = {**body, "metadata": {
        **body["metadata"], "annotations": {**(body["metadata"].get("annotations") or {})}}}
    digest = content_hash(labelled)
    labelled["metadata"]["annotations"][HASH_ANNOTATION] = digest
    return Desired(cluster, ref, labelled, digest, rank, error)


def materialize(owner: Owner, cluster: str, manifest: dict[str, Any], *,
                rank: int | None = None) -> Desired:
    """One desired object for one cluster: defaults, owner labels, hash annotation."""
    ref, body = _prepare(manifest, owner)
    return _hashed(cluster, ref, body, _RANK.get(ref.kind, LAST_RANK) if rank is None else rank)


Fleet = Mapping[str, Mapping[str, str]]
"""The registered clusters and their labels (name -> labels), as selectors see them."""

_IDENTITY = ("apiVersion", "kind")
_META_IDENTITY = ("name", "namespace")


def placements(spec: Spec, fleet: Fleet) -> list[list[str]]:
    """The clusters of each workload, in spec order."""
    return [w.targets(fleet) for w in spec.workloads]


def _overridden(manifest: dict[str, Any], workload: Workload, wi: int, cluster: str,
                labels: Mapping[str, str]) -> dict[str, Any]:
    """The manifest with the workload's overrides for this cluster applied, in order.

    Raises PatchError naming the override that failed."""
    kind = str(manifest.get("kind", ""))
    name = str((manifest.get("metadata") or {}).get("name", ""))
    variables = {"cluster.name": cluster,
                 **{f"cluster.labels.{k}": v for k, v in labels.items()}}
    body = manifest
    if not workload.overrides:
        return body
    for oi, override in enumerate(workload.overrides):
        if not (override.selects(cluster, labels) and override.targets(kind, name)):
            continue
        where = f"workloads[{wi}].overrides[{oi}]"
        try:
            if override.merge_patch is not None:
                body = merge_patch(body, substitute(override.merge_patch, variables,
                                                    where=f"for cluster {cluster}"))
            else:
                body = json_patch(body, substitute(override.json_patch, variables,
                                                   where=f"for cluster {cluster}"))
        except PatchError as exc:
            raise PatchError(f"{where}: {exc}") from None
        if not isinstance(body, dict) or any(
                body.get(k) != manifest.get(k) for k in _IDENTITY) or any(
                (body.get("metadata") or {}).get(k) != (manifest.get("metadata") or {}).get(k)
                for k in _META_IDENTITY):
            raise PatchError(f"{where}: an override must not change apiVersion, kind, "
                             "metadata.name or metadata.namespace")
    return body


def _unidentified(ref: ResourceRef, cluster: str, where: str,
                  seen: dict[tuple[str, ResourceRef], str]) -> str | None:
    """Why the item cannot be applied as an object of its own (no name, a duplicate)."""
    if not ref.name:
        return f"{where} has no metadata.name"
    if (cluster, ref) in seen:
        return f"{where} duplicates {seen[(cluster, ref)]} for cluster {cluster}"
    seen[(cluster, ref)] = where
    return None


def render(owner: Owner, spec: Spec, fleet: Fleet) -> list[Desired]:
    """Every (cluster, manifest) pair the spec asks for, in spec order: workload, then its
    clusters (``placements``), then its manifests.  A manifest an override changes for a
    cluster is prepared for that cluster alone; an override that fails is that item's error."""
    out: list[Desired] = []
    seen: dict[tuple[str, ResourceRef], str] = {}
    for wi, (workload, clusters) in enumerate(zip(spec.workloads, placements(spec, fleet),
                                                  strict=True)):
        prepared = [_prepare(m, owner) for m in workload.manifests]
        for cluster in clusters:
            labels = fleet.get(cluster, {})
            for mi, (ref, body) in enumerate(prepared):
                where = f"workloads[{wi}].manifests[{mi}]"
                try:
                    patched = _overridden(workload.manifests[mi], workload, wi, cluster, labels)
                    if patched is not workload.manifests[mi]:
                        _, body = _prepare(patched, owner)
                    error = _unidentified(ref, cluster, where, seen)
                except PatchError as exc:
                    error = f"{exc} (on {where})"
                out.append(_hashed(cluster, ref, body, _RANK.get(ref.kind, LAST_RANK), error))
    return out


def scoped(body: dict[str, Any], namespaced: bool) -> dict[str, Any]:
    """The body as sent to a cluster whose discovery says whether the kind is namespaced: a
    cluster-scoped object carries no metadata.namespace."""
    if namespaced or not body["metadata"].get("namespace"):
        return body
    return {**body, "metadata": {k: v for k, v in body["metadata"].items() if k != "namespace"}}


def apply_order(items: list[Desired]) -> list[list[Desired]]:
    """One cluster's items grouped by rank: groups are applied in order, members in parallel."""
    groups: dict[int, list[Desired]] = {}
    for item in items:
        groups.setdefault(item.rank, []).append(item)
    return [groups[r] for r in sorted(groups)]
