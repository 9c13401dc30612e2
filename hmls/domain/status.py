"""The HyperMLService status as ONE typed value: built complete, read through one view,
written whole.

Pure.  The reconciler collects one ``ItemResult`` per (cluster, manifest) and calls
``aggregate`` (or ``invalid`` / ``cleanup_pending``) for the complete new ``Status``.
Everything that reads a stored status (the reconciler's inventory and rollout state, the hub
cache's routing, the CLI, ``hmls diff``) reads it as a ``Status`` through ``Status.of``, which
tolerates whatever an older controller or a user wrote there.  ``Status.to_wire`` is the
stored form; ``status_patch`` is the merge patch that makes the stored status equal to it
exactly (no key of an earlier status survives, at any depth), and is None when nothing
changed, so an unchanged status is never written.  Condition ``lastTransitionTime`` moves
only when a condition's status changes (``now`` is passed in).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hmls.domain.conditions import Condition, Stamped, stamp
from hmls.domain.health import Health, health
from hmls.domain.models import Spec
from hmls.domain.render import ResourceRef
from hmls.domain.rollout import HALTED, PAUSED, State
from hmls.domain.wire import mappings, number, opt_text, text

APPLIED_OK = "Manifest has been successfully applied"
ALL_APPLIED = "All manifests have been successfully applied"
_MAX_LISTED = 3


def _count(value: Any) -> int:
    return number(value) or 0


# ----- the parts of a status ----------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One (cluster, manifest) of ``status.aggregatedStatus``, as stored."""

    cluster: str
    resource: ResourceRef
    applied: bool
    message: str
    created: bool = False
    ready: bool | None = None
    ready_message: str | None = None
    drift: str | None = None
    status: Mapping[str, Any] | None = None
    """The spoke object's ``.status`` as last observed."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cluster": self.cluster, "resource": self.resource.to_status(),
                               "applied": self.applied, "appliedMessage": self.message}
        if self.created:
            out["created"] = True
        if self.ready is not None:
            out["ready"] = self.ready
        if self.ready_message is not None:
            out["readyMessage"] = self.ready_message
        if self.drift:
            out["drift"] = self.drift
        if self.status is not None:
            out["status"] = self.status
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Item:
        ready, status = raw.get("ready"), raw.get("status")
        return cls(text(raw.get("cluster")), ResourceRef.from_status(raw.get("resource")),
                   raw.get("applied") is True, text(raw.get("appliedMessage")),
                   raw.get("created") is True, ready if isinstance(ready, bool) else None,
                   opt_text(raw.get("readyMessage")), opt_text(raw.get("drift")),
                   status if isinstance(status, Mapping) else None)


@dataclass(frozen=True)
class ItemResult:
    """What one reconcile found of one (cluster, manifest)."""

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
    failure: str = ""
    """Not applied: why, as a condition reason (a key of ``STALLING`` when it takes a
    person; ``Unreachable`` or ``Failed`` when trying again may do)."""

    @property
    def health(self) -> Health | None:
        if self.applied:
            return self.observed_health
        bare = {"apiVersion": self.ref.api_version, "kind": self.ref.kind}
        return Health(False, "not applied") if health(bare) is not None else None

    def to_item(self) -> Item:
        h = self.health
        return Item(self.cluster, self.ref, self.applied, self.message,
                    created=self.created and not self.applied,
                    ready=None if h is None else h.ready,
                    ready_message=h.reason if h is not None and not h.ready else None,
                    drift=self.drift or None, status=self.status)


@dataclass(frozen=True)
class Pending:
    """An object that could not be deleted yet (``status.pendingDeletions``)."""

    cluster: str
    resource: ResourceRef
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "resource": self.resource.to_status(),
                "message": self.message}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Pending:
        return cls(text(raw.get("cluster")), ResourceRef.from_status(raw.get("resource")),
                   text(raw.get("message")))


@dataclass(frozen=True)
class Route:
    """One cluster's HeadIngress route (``status.traffic.routes``)."""

    cluster: str
    url: str
    weight: int
    """As configured."""
    effective_weight: int
    """As routed now."""
    healthy_since: str | None = None
    damped: bool = False
    reason: str | None = None
    tier: int | None = None
    """The index of its tier in ``spec.traffic.tiers`` (``len(tiers)``: in none); None
    without tiers."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cluster": self.cluster, "url": self.url, "weight": self.weight,
                               "effectiveWeight": self.effective_weight}
        if self.healthy_since:
            out["healthySince"] = self.healthy_since
        if self.damped:
            out["damped"] = True
        if self.reason:
            out["reason"] = self.reason
        if self.tier is not None:
            out["tier"] = self.tier
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Route:
        return cls(text(raw.get("cluster")), text(raw.get("url")), _count(raw.get("weight")),
                   _count(raw.get("effectiveWeight")), opt_text(raw.get("healthySince")),
                   raw.get("damped") is True, opt_text(raw.get("reason")),
                   number(raw.get("tier")))


@dataclass(frozen=True)
class TrafficStatus:
    """``status.traffic``: the HeadIngress as the ingress cluster has it: the last plan
    written there (while a write fails, the routes stay those, and the objects of the new
    plan are added to the ones kept)."""

    ingress_cluster: str
    provider: str
    path_prefix: str
    routes: tuple[Route, ...] = ()
    objects: tuple[ResourceRef, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"ingressCluster": self.ingress_cluster, "provider": self.provider,
                "pathPrefix": self.path_prefix, "routes": [r.to_wire() for r in self.routes],
                "objects": [o.to_status() for o in self.objects]}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> TrafficStatus:
        return cls(text(raw.get("ingressCluster")), text(raw.get("provider")),
                   text(raw.get("pathPrefix")),
                   tuple(Route.from_wire(r) for r in mappings(raw.get("routes"))),
                   tuple(ResourceRef.from_status(o) for o in mappings(raw.get("objects"))))

    def serving(self) -> set[str]:
        """The clusters the HeadIngress gives traffic to."""
        return {r.cluster for r in self.routes if r.effective_weight > 0}


@dataclass(frozen=True)
class Placement:
    """``status.placements``: the clusters a workload's clusterSelector chose."""

    workload: int
    selector: str
    clusters: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"workload": self.workload, "selector": self.selector,
                "clusters": list(self.clusters)}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Placement:
        clusters = raw.get("clusters")
        return cls(_count(raw.get("workload")), text(raw.get("selector")),
                   tuple(map(text, clusters)) if isinstance(clusters, list) else ())


@dataclass(frozen=True)
class Summary:
    """``status.summary``: the printer columns."""

    clusters: int
    applied: str
    ready: str

    def to_wire(self) -> dict[str, Any]:
        return {"clusters": self.clusters, "applied": self.applied, "ready": self.ready}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Summary:
        return cls(_count(raw.get("clusters")), text(raw.get("applied")), text(raw.get("ready")))


@dataclass(frozen=True)
class RolloutStatus:
    """``status.rollout``: the rollout state, its clusters in rollout order."""

    state: State
    order: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return self.state.to_status(list(self.order))

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> RolloutStatus:
        state = State.from_status(raw)
        return cls(state, tuple(state.steps))


@dataclass(frozen=True)
class Status:
    """A HyperMLService's ``status``."""

    observed_generation: int | None = None
    summary: Summary | None = None
    items: tuple[Item, ...] = ()
    conditions: tuple[Stamped, ...] = ()
    pending_deletions: tuple[Pending, ...] = ()
    traffic: TrafficStatus | None = None
    created_namespaces: tuple[tuple[str, str], ...] = ()
    """(cluster, namespace) of the spoke namespaces hmls created for these manifests."""
    placements: tuple[Placement, ...] = ()
    rollout: RolloutStatus | None = None
    summarised: str | None = None
    """Set when the per-item spoke status was left out to keep the object small."""

    # ----- wire ------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        if self.summary is not None:
            out["summary"] = self.summary.to_wire()
        out["aggregatedStatus"] = [i.to_wire() for i in self.items]
        out["conditions"] = [c.to_wire() for c in self.conditions]
        if self.pending_deletions:
            out["pendingDeletions"] = [p.to_wire() for p in self.pending_deletions]
        if self.traffic is not None:
            out["traffic"] = self.traffic.to_wire()
        if self.created_namespaces:
            out["createdNamespaces"] = [{"cluster": c, "name": n}
                                        for c, n in self.created_namespaces]
        if self.placements:
            out["placements"] = [p.to_wire() for p in self.placements]
        if self.rollout is not None:
            out["rollout"] = self.rollout.to_wire()
        if self.summarised:
            out["summarised"] = self.summarised
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Status:
        generation, summary = raw.get("observedGeneration"), raw.get("summary")
        traffic, rollout = raw.get("traffic"), raw.get("rollout")
        return cls(
            number(generation),
            Summary.from_wire(summary) if isinstance(summary, Mapping) else None,
            tuple(Item.from_wire(i) for i in mappings(raw.get("aggregatedStatus"))),
            tuple(Stamped.from_wire(c) for c in mappings(raw.get("conditions"))),
            tuple(Pending.from_wire(p) for p in mappings(raw.get("pendingDeletions"))),
            TrafficStatus.from_wire(traffic) if isinstance(traffic, Mapping) else None,
            tuple((text(n.get("cluster")), text(n.get("name")))
                  for n in mappings(raw.get("createdNamespaces"))),
            tuple(Placement.from_wire(p) for p in mappings(raw.get("placements"))),
            RolloutStatus.from_wire(rollout) if isinstance(rollout, Mapping) else None,
            opt_text(raw.get("summarised")))

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> Status:
        """The stored status of a HyperMLService, read (anything else stored there is
        ignored)."""
        status = (obj or {}).get("status")
        return cls.from_wire(status) if isinstance(status, Mapping) else cls()

    # ----- reading -----------------------------------------------------------------------
    def condition(self, ctype: str) -> Stamped | None:
        return next((c for c in self.conditions if c.type == ctype), None)

    @property
    def fully_applied(self) -> bool:
        cond = self.condition("FullyApplied")
        return cond is not None and cond.status == "True"

    @staticmethod
    def clusters_of(obj: Mapping[str, Any] | None) -> set[str]:
        """Every cluster a HyperMLService's stored status involves: its items', its pending
        deletions' and the ingress cluster (a cluster coming back must re-enqueue a CR that
        waits on it for a deletion only, or it waits for its backoff).  Read from the wire
        form without building the whole value: the hub cache runs this on every watch event
        (building it was 490 of the 760 us a 16-cluster CR took to cache)."""
        raw = (obj or {}).get("status")
        if not isinstance(raw, Mapping):
            return set()
        traffic = raw.get("traffic")
        ingress = opt_text(traffic.get("ingressCluster")) if isinstance(traffic, Mapping) \
            else None
        return ({text(i.get("cluster")) for key in ("aggregatedStatus", "pendingDeletions")
                 for i in mappings(raw.get(key))} | ({ingress} if ingress else set())) - {""}

    def messages(self) -> dict[tuple[str, ResourceRef], str]:
        """The last applied message of each (cluster, resource)."""
        return {(i.cluster, i.resource): i.message for i in self.items}

    def inventory(self) -> dict[str, set[ResourceRef]]:
        """What this status says hmls created, by cluster: items applied now or before
        (``created``), pending deletions and the traffic objects.  Items that were never
        applied (a misspelt or unregistered cluster, a refused manifest) are not inventory."""
        out: dict[str, set[ResourceRef]] = {}
        made = [(i.cluster, i.resource) for i in self.items if i.applied or i.created]
        for cluster, ref in [*made, *((p.cluster, p.resource) for p in self.pending_deletions)]:
            if cluster:
                out.setdefault(cluster, set()).add(ref)
        if self.traffic and self.traffic.ingress_cluster:
            out.setdefault(self.traffic.ingress_cluster, set()).update(self.traffic.objects)
        return out


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
        missing = sum(not i.applied for i in items)
        if missing:
            return Condition("Ready", "False", "NotApplied",
                             f"{missing} of {len(items)} objects not applied (no object in the "
                             "workloads has a readiness rule: Ready once all are applied)")
        return Condition("Ready", "True", "NoReadinessRule",
                         "No object in the workloads has a readiness rule; ready once applied")
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


STALLING = {
    "InvalidManifest": "fix the manifest or its override in spec.workloads",
    "Rejected": "the cluster's API server rejected the manifest: fix it in spec.workloads",
    "UnknownKind": "install the kind (its CRD) on the cluster, or remove the manifest",
    "Conflict": "another owner holds the object: remove it there, or set spec.takeOver: true",
    "Forbidden": "hmls's identity on the cluster lacks the permission: grant it (see the "
                 "message)",
    "Unauthorized": "the cluster refused hmls's credentials: renew them (hmls cluster rotate)",
    "Refused": "the cluster's registration refuses it (its Secret's access labels)",
    "ClusterNotRegistered": "register the cluster (hmls cluster join) or fix its name",
    "ClusterUnusable": "fix the cluster's kubeconfig Secret on the hub (hmls cluster join)",
}
"""Item failure reasons that no retry will mend, and what a person does about each."""
UNREACHABLE, FAILED = "Unreachable", "Failed"


def progress(items: list[ItemResult], conditions: Iterable[Condition],
             pending: Iterable[Pending] = ()) -> list[Condition]:
    """kstatus's abnormal-true conditions, read by kstatus (cli-utils), Flux, Argo CD and
    kpt: ``Stalled=True`` while nothing moves without a person (an item no retry will apply,
    a spoke object its controller gave up on, a halted rollout), ``Reconciling=True`` while
    progress is expected on its own (a retry, an unreachable cluster, readiness awaited, a
    rollout step, a deletion waiting for its cluster); neither when the HyperMLService is
    Current.  Both can hold at once; Stalled is listed first, because kstatus decides by
    whichever of the two comes first.  A paused rollout is what its user asked for: neither.
    The reason is the first cause's; the message lists each cause."""
    by_type = {c.type: c for c in conditions}
    stalled: list[tuple[str, str]] = []
    reconciling: list[tuple[str, str]] = []
    stuck = [i for i in items if not i.applied and i.failure in STALLING]
    if stuck:
        reason = stuck[0].failure
        stalled.append((reason, f"{len(stuck)} of {len(items)} manifests cannot be applied: "
                        f"{_listing([f'{i.cluster}: {i.ref}: {i.message}' for i in stuck])}"
                        f" ({STALLING[reason]})"))
    gave_up = [i for i in items if i.applied and i.health is not None and i.health.failed]
    if gave_up:
        stalled.append(("ObjectFailed", f"{len(gave_up)} objects failed on their cluster: "
                        + _listing([f"{i.cluster}: {i.ref}: {i.health.reason}"
                                    for i in gave_up if i.health])))
    rolled, routed = by_type.get("RolledOut"), by_type.get("TrafficReady")
    if rolled is not None and rolled.reason == HALTED:
        stalled.append(("RolloutHalted", rolled.message + " (push a fixed revision, or "
                        "hmls rollout undo)"))
    if routed is not None and routed.reason == "InvalidTraffic":
        stalled.append(("InvalidTraffic", routed.message))
    retrying = [i for i in items if not i.applied and i.failure not in STALLING]
    if retrying:
        reason = "ClusterUnreachable" if any(i.failure == UNREACHABLE for i in retrying) \
            else "Retrying"
        reconciling.append((reason, f"{len(retrying)} manifests not applied yet, retrying: "
                            + _listing([f"{i.cluster}: {i.ref}: {i.message}"
                                        for i in retrying])))
    if rolled is not None and rolled.status == "False" and rolled.reason not in (
            HALTED, PAUSED):
        reconciling.append(("RolloutInProgress", rolled.message))
    waiting = [i for i in items if i.applied and i.health is not None
               and not i.health.ready and not i.health.failed]
    if waiting:
        reconciling.append(("WaitingForReady", f"{len(waiting)} objects not Ready yet: "
                            + _listing([f"{i.cluster}: {i.ref}: {i.health.reason}"
                                        for i in waiting if i.health])))
    if routed is not None and routed.reason == "IngressApplyFailed":
        reconciling.append(("IngressApplyFailed", routed.message))
    pending = list(pending)
    if pending:
        reconciling.append(("CleanupPending", f"{len(pending)} objects wait to be deleted: "
                            + _listing([f"{p.cluster}: {p.resource}: {p.message}"
                                        for p in pending])))
    return [Condition(ctype, "True", causes[0][0], "; ".join(m for _, m in causes))
            for ctype, causes in (("Stalled", stalled), ("Reconciling", reconciling)) if causes]


def summary(items: list[ItemResult]) -> Summary:
    tracked = [h for h in (i.health for i in items) if h is not None]
    return Summary(len({i.cluster for i in items}), f"{sum(i.applied for i in items)}/{len(items)}",
                   f"{sum(h.ready for h in tracked)}/{len(tracked)}")


def aggregate(*, generation: int, items: list[ItemResult], previous: Status, now: str,
              extra: tuple[Condition, ...] = (), pending: Iterable[Pending] = (),
              traffic: TrafficStatus | None = None,
              created_namespaces: Iterable[tuple[str, str]] = (),
              selected: Iterable[Placement] = (), rollout: RolloutStatus | None = None,
              behind: Behind | None = None) -> Status:
    """The complete new status for these item results."""
    pending = tuple(pending)
    conditions = [fully_applied(items, behind), ready(items), *extra]
    conditions += progress(items, conditions, pending)
    return Status(generation, summary(items), tuple(i.to_item() for i in items),
                  stamp(previous.conditions, conditions, generation=generation, now=now),
                  pending, traffic, tuple(created_namespaces), tuple(selected), rollout)


def selected(spec: Spec, chosen: list[list[str]]) -> list[Placement]:
    """``status.placements``: the clusters each workload's clusterSelector chose."""
    return [Placement(wi, str(w.cluster_selector), tuple(clusters))
            for wi, (w, clusters) in enumerate(zip(spec.workloads, chosen, strict=True))
            if w.cluster_selector is not None]


def cleanup_pending(*, previous: Status, generation: int, now: str, message: str) -> Status:
    """The stored status with CleanupPending=True: a deletion waits for a cluster."""
    cond = Condition("CleanupPending", "True", "ClusterUnavailable", message)
    return replace(previous, observed_generation=generation, conditions=(
        *(c for c in previous.conditions if c.type != cond.type),
        *stamp(previous.conditions, [cond], generation=generation, now=now)))


def status_patch(stored: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch (RFC 7396) that turns the stored status into exactly the new one,
    or None when they are equal: every key of the stored status the new one lacks is deleted
    at whatever depth it sits (an explicit null), a changed list or scalar is sent whole, and
    an unchanged member is not sent.  The status holds no nulls of its own."""
    if stored == new:
        return None
    out: dict[str, Any] = dict.fromkeys(k for k in stored if k not in new)
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


def fit(status: Status, limit: int = MAX_STATUS_BYTES) -> Status:
    """The status, summarised if its JSON would exceed limit: per-item spoke status is
    dropped (cluster, resource, applied, message and ready stay, so nothing hmls needs to
    prune or clean up is forgotten) and ``summarised`` says so."""
    size = len(json.dumps(status.to_wire(), separators=(",", ":")))
    if size <= limit:
        return status
    return replace(status, items=tuple(replace(i, status=None) for i in status.items),
                   summarised=(f"per-item status omitted: the full status would be {size} "
                               f"bytes (limit {limit}); see each cluster for details"))


def invalid(*, generation: int, previous: Status, now: str, message: str) -> Status:
    """Status for a spec that cannot be rendered: FullyApplied False, Ready Unknown and
    Stalled for this generation (no longer Reconciling: nothing is tried until the spec
    changes); everything else (items, pending deletions, traffic, the rollout) kept as it
    was, so nothing hmls made is forgotten."""
    conditions = [Condition("FullyApplied", "False", "InvalidSpec", message),
                  Condition("Ready", "Unknown", "InvalidSpec", "spec is invalid"),
                  Condition("Stalled", "True", "InvalidSpec",
                            f"{message} (fix the HyperMLService's spec)")]
    stamped = stamp(previous.conditions, conditions, generation=generation, now=now)
    types = {c.type for c in stamped} | {"Reconciling"}
    return replace(previous, observed_generation=generation,
                   summary=previous.summary or Summary(0, "0/0", "0/0"),
                   conditions=(*stamped, *(c for c in previous.conditions
                                           if c.type not in types)))
