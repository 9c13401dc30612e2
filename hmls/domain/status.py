"""The HyperMLService status: built as a value, read through one view.

Pure.  The reconciler collects one ``ItemResult`` per (cluster, manifest) and calls
``aggregate`` (or ``invalid`` / ``cleanup_pending``) for the complete new status; it writes
the result only when it differs from the stored status.  Condition ``lastTransitionTime``
moves only when a condition's status changes (``now`` is passed in).  Everything that reads a
stored status (the reconciler's inventory, the manager's routing, the CLI) reads it through
``StatusView``, which tolerates whatever an older controller or a user wrote there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hmls.domain.health import Health, health
from hmls.domain.models import Spec
from hmls.domain.render import ResourceRef

APPLIED_OK = "Manifest has been successfully applied"
ALL_APPLIED = "All manifests have been successfully applied"
_MAX_LISTED = 3


@dataclass(frozen=True)
class ItemResult:
    cluster: str
    ref: ResourceRef
    applied: bool
    message: str
    status: dict[str, Any] | None = None
    observed_health: Health | None = None
    """Readiness of the object as last observed (None: no readiness rule for its kind)."""
    created: bool = False
    """Not applied now, but applied earlier: the object may exist on the cluster."""
    drift: str | None = None
    """driftPolicy Report: what changed on the cluster behind hmls's back."""
    written: bool = False
    """This reconcile wrote the object: its observed status predates the write."""

    @property
    def health(self) -> Health | None:
        if self.applied:
            return self.observed_health
        bare = {"apiVersion": self.ref.api_version, "kind": self.ref.kind}
        return Health(False, "not applied") if health(bare) is not None else None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cluster": self.cluster,
            "resource": self.ref.to_status(),
            "applied": self.applied,
            "appliedMessage": self.message,
        }
        if self.created and not self.applied:
            out["created"] = True
        h = self.health
        if h is not None:
            out["ready"] = h.ready
            if not h.ready:
                out["readyMessage"] = h.reason
        if self.drift:
            out["drift"] = self.drift
        if self.status is not None:
            out["status"] = self.status
        return out


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def _listing(failures: list[str]) -> str:
    shown = "; ".join(failures[:_MAX_LISTED])
    more = len(failures) - _MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def fully_applied(items: list[ItemResult], behind: Behind | None = None) -> Condition:
    """True when every item is applied and (for a progressive rollout) every cluster runs
    the current revision: a generation is applied only once all of it is on the clusters."""
    failed = [f"{i.cluster}: {i.ref}: {i.message}" for i in items if not i.applied]
    if failed:
        return Condition("FullyApplied", "False", "ApplyFailed",
                         f"{len(failed)} of {len(items)} manifests not applied: {_listing(failed)}")
    if behind and behind.clusters:
        return Condition("FullyApplied", "False",
                         "RolloutHalted" if behind.halted else "RolloutInProgress",
                         f"revision {behind.revision} is not on {', '.join(behind.clusters)} yet"
                         + (" (the rollout is halted)" if behind.halted else
                            " (progressive rollout)"))
    return Condition("FullyApplied", "True", "AllApplied", ALL_APPLIED)


@dataclass(frozen=True)
class Behind:
    """The clusters a progressive rollout has not brought to ``revision`` yet."""

    revision: int | None
    clusters: list[str]
    halted: bool = False


def _counted(kinds: list[str]) -> str:
    """"2 MLServices", or "4 objects (2 Deployments, 2 MLServices)" for several kinds."""
    by_kind = Counter(kinds)
    if len(by_kind) == 1:
        kind, n = by_kind.popitem()
        return f"{n} {kind}{'s' if n != 1 else ''}"
    parts = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(by_kind.items()))
    return f"{len(kinds)} objects ({parts})"


def ready(items: list[ItemResult]) -> Condition:
    """Every item whose kind has a readiness rule (``hmls.domain.health``) must be ready;
    kinds without one count as ready once applied."""
    judged = [(i, i.health) for i in items]
    tracked = [(i, h) for i, h in judged if h is not None]
    if not tracked:
        applied = all(i.applied for i in items)
        return Condition("Ready", "True" if applied else "False",
                         "NoReadinessRule" if applied else "NotApplied",
                         "No object in the workloads has a readiness rule; ready once applied"
                         + ("" if applied else "; not all applied"))
    waiting = [f"{i.cluster}: {i.ref}: {h.reason}" for i, h in tracked if not h.ready]
    counted = _counted([i.ref.kind for i, _ in tracked])
    if not waiting:
        return Condition("Ready", "True", "AllReady", f"{counted} is Ready" if len(tracked) == 1
                         else f"All {counted} are Ready")
    return Condition("Ready", "False", "NotReady",
                     f"{len(waiting)} of {counted} not ready: {_listing(waiting)}")


def in_sync(items: list[ItemResult]) -> Condition:
    """driftPolicy Report: whether every applied object still holds what hmls applied."""
    drifted = [f"{i.cluster}: {i.ref}: {i.drift}" for i in items if i.drift]
    if not drifted:
        return Condition("InSync", "True", "NoDrift",
                         "Every applied object holds what hmls applied")
    return Condition("InSync", "False", "DriftReported",
                     f"{len(drifted)} objects changed on their cluster (driftPolicy Report, "
                     f"not corrected): {_listing(drifted)}")


def merge_conditions(previous: list[dict[str, Any]], new: list[Condition], *,
                     generation: int, now: str) -> list[dict[str, Any]]:
    """New conditions, keeping lastTransitionTime where the status did not change."""
    old = {c.get("type"): c for c in previous if isinstance(c, dict)}
    out = []
    for cond in new:
        prev = old.get(cond.type)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == cond.status else None
        out.append({
            "type": cond.type, "status": cond.status, "reason": cond.reason,
            "message": cond.message, "observedGeneration": generation,
            "lastTransitionTime": since or now,
        })
    return out


def summary(items: list[ItemResult]) -> dict[str, Any]:
    tracked = [h for h in (i.health for i in items) if h is not None]
    return {
        "clusters": len({i.cluster for i in items}),
        "applied": f"{sum(i.applied for i in items)}/{len(items)}",
        "ready": f"{sum(h.ready for h in tracked)}/{len(tracked)}",
    }


def aggregate(*, generation: int, items: list[ItemResult], previous: StatusView, now: str,
              extra: tuple[Condition, ...] = (), pending: list[dict[str, Any]] | None = None,
              traffic: dict[str, Any] | None = None,
              created_namespaces: list[dict[str, str]] | None = None,
              selected: list[dict[str, Any]] | None = None,
              rollout: dict[str, Any] | None = None, behind: Behind | None = None
              ) -> dict[str, Any]:
    """The complete new status for these item results (None values: fields to remove)."""
    conditions = [fully_applied(items, behind), ready(items), *extra]
    return {
        "observedGeneration": generation,
        "summary": summary(items),
        "aggregatedStatus": [i.to_status() for i in items],
        "conditions": merge_conditions(previous.conditions, conditions,
                                       generation=generation, now=now),
        "pendingDeletions": pending or None,
        "traffic": traffic,
        "createdNamespaces": created_namespaces or None,
        "placements": selected or None,
        "rollout": rollout,
    }


def selected(spec: Spec, chosen: list[list[str]]) -> list[dict[str, Any]]:
    """``status.placements``: the clusters each workload's clusterSelector chose."""
    return [{"workload": wi, "selector": str(w.cluster_selector), "clusters": clusters}
            for wi, (w, clusters) in enumerate(zip(spec.workloads, chosen, strict=True))
            if w.cluster_selector is not None]


def cleanup_pending(*, previous: StatusView, generation: int, now: str, message: str
                    ) -> dict[str, Any]:
    """The stored status with CleanupPending=True: a deletion waits for a cluster."""
    cond = Condition("CleanupPending", "True", "ClusterUnavailable", message)
    return {**previous.raw, "observedGeneration": generation, "conditions": [
        *(c for c in previous.conditions if c.get("type") != cond.type),
        *merge_conditions(previous.conditions, [cond], generation=generation, now=now)]}


def status_patch(stored: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch (RFC 7396) that turns the stored status into exactly the new one,
    or None when they are equal: every key of the stored status the new one lacks is deleted
    at whatever depth it sits (an explicit null), a changed list or scalar is sent whole, and
    an unchanged member is not sent.  The status holds no nulls of its own."""
    if stored == new:
        return None
    out: dict[str, Any] = dict.fromkeys((k for k in stored if k not in new))
    for key, value in new.items():
        old = stored.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            nested = status_patch(old, value)
            if nested is not None:
                out[key] = nested
        elif key not in stored or old != value:
            out[key] = value
    return out


MAX_STATUS_BYTES = 512 * 1024
"""Well under etcd's 1.5 MiB object limit, leaving room for the spec."""


def fit(status: dict[str, Any], limit: int = MAX_STATUS_BYTES) -> dict[str, Any]:
    """The status, summarised if its JSON would exceed limit: per-item spoke status is
    dropped (cluster, resource, applied, message and ready stay, so nothing hmls needs to
    prune or clean up is forgotten) and ``summarised`` says so."""
    size = len(json.dumps(status, separators=(",", ":")))
    if size <= limit:
        return status
    items = [{k: v for k, v in i.items() if k != "status"} for i in status["aggregatedStatus"]]
    return {**status, "aggregatedStatus": items,
            "summarised": (f"per-item status omitted: the full status would be {size} bytes "
                           f"(limit {limit}); see each cluster for details")}


def invalid(*, generation: int, previous: StatusView, now: str, message: str
            ) -> dict[str, Any]:
    """Status for a spec that cannot be rendered: items kept, FullyApplied False."""
    conditions = [Condition("FullyApplied", "False", "InvalidSpec", message),
                  Condition("Ready", "Unknown", "InvalidSpec", "spec is invalid")]
    return {
        "observedGeneration": generation,
        "summary": previous.raw.get("summary") or {"clusters": 0, "applied": "0/0",
                                                   "ready": "0/0"},
        "aggregatedStatus": previous.items,
        "conditions": merge_conditions(previous.conditions, conditions,
                                       generation=generation, now=now),
    }


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class StatusView:
    """A stored ``status``, read."""

    raw: Mapping[str, Any]

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> StatusView:
        status = (obj or {}).get("status")
        return cls(status if isinstance(status, dict) else {})

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return _dicts(self.raw.get("conditions"))

    def condition(self, ctype: str) -> dict[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == ctype), None)

    @property
    def fully_applied(self) -> bool:
        return (self.condition("FullyApplied") or {}).get("status") == "True"

    @property
    def items(self) -> list[dict[str, Any]]:
        return _dicts(self.raw.get("aggregatedStatus"))

    @property
    def clusters(self) -> set[str]:
        """Every cluster this status involves: its items', its pending deletions' and the
        ingress cluster (a cluster coming back must re-enqueue a CR that waits on it for a
        deletion only, or it waits for its backoff)."""
        pending = _dicts(self.raw.get("pendingDeletions"))
        ingress = (self.traffic or {}).get("ingressCluster")
        return ({str(i["cluster"]) for i in [*self.items, *pending] if i.get("cluster")}
                | ({str(ingress)} if ingress else set()))

    @property
    def traffic(self) -> dict[str, Any] | None:
        traffic = self.raw.get("traffic")
        return traffic if isinstance(traffic, dict) else None

    def messages(self) -> dict[tuple[str, ResourceRef], str]:
        """The last applied message of each (cluster, resource)."""
        return {(str(i.get("cluster")), _ref(i)): str(i.get("appliedMessage"))
                for i in self.items}

    def inventory(self) -> dict[str, set[ResourceRef]]:
        """What this status says hmls created, by cluster: items applied now or before
        (``created``), pending deletions and the traffic objects.  Items that were never
        applied (a misspelt or unregistered cluster, a refused manifest) are not inventory."""
        out: dict[str, set[ResourceRef]] = {}
        made = [i for i in self.items if i.get("applied") or i.get("created")]
        for item in [*made, *_dicts(self.raw.get("pendingDeletions"))]:
            if item.get("cluster") and isinstance(item.get("resource"), dict):
                out.setdefault(str(item["cluster"]), set()).add(_ref(item))
        traffic = self.traffic or {}
        if traffic.get("ingressCluster"):
            out.setdefault(str(traffic["ingressCluster"]), set()).update(
                ResourceRef.from_status(o) for o in _dicts(traffic.get("objects")))
        return out


def _ref(item: Mapping[str, Any]) -> ResourceRef:
    resource = item.get("resource")
    return ResourceRef.from_status(resource if isinstance(resource, dict) else {})
