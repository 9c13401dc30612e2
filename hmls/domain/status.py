"""The HyperMLService status as a value: aggregated items, summary and conditions.

Pure.  The reconciler collects one ``ItemResult`` per (cluster, manifest) and calls
``aggregate``; it writes the result only when it differs from the stored status.  Condition
``lastTransitionTime`` moves only when a condition's status changes (``now`` is passed in).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hmls.domain.health import Health, health
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


def fully_applied(items: list[ItemResult]) -> Condition:
    failed = [f"{i.cluster}: {i.ref}: {i.message}" for i in items if not i.applied]
    if not failed:
        return Condition("FullyApplied", "True", "AllApplied", ALL_APPLIED)
    return Condition("FullyApplied", "False", "ApplyFailed",
                     f"{len(failed)} of {len(items)} manifests not applied: {_listing(failed)}")


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


def aggregate(*, generation: int, items: list[ItemResult], previous: dict[str, Any] | None,
              now: str, extra: tuple[Condition, ...] = ()) -> dict[str, Any]:
    """The complete new status for these item results."""
    conditions = [fully_applied(items), ready(items), *extra]
    return {
        "observedGeneration": generation,
        "summary": summary(items),
        "aggregatedStatus": [i.to_status() for i in items],
        "conditions": merge_conditions((previous or {}).get("conditions") or [], conditions,
                                       generation=generation, now=now),
    }


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


def invalid(*, generation: int, previous: dict[str, Any] | None, now: str, message: str
            ) -> dict[str, Any]:
    """Status for a spec that cannot be rendered: items kept, FullyApplied False."""
    prev = previous or {}
    conditions = [Condition("FullyApplied", "False", "InvalidSpec", message),
                  Condition("Ready", "Unknown", "InvalidSpec", "spec is invalid")]
    return {
        "observedGeneration": generation,
        "summary": prev.get("summary") or {"clusters": 0, "applied": "0/0", "ready": "0/0"},
        "aggregatedStatus": prev.get("aggregatedStatus") or [],
        "conditions": merge_conditions(prev.get("conditions") or [], conditions,
                                       generation=generation, now=now),
    }
