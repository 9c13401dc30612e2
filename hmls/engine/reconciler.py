"""Reconcile one HyperMLService: read → render → fan-out apply → prune → status, once.

Level-triggered and keyed by ``namespace/name``: every call recomputes everything from the
hub object (from the hub informer's store) and the spoke informers' stores.  A failure on one
cluster or one manifest becomes an ``ItemResult`` and never stops the others; the outcome
tells the worker whether to requeue with backoff.  Any API answer about one object (4xx, or
a 5xx such as an apply that cannot build its typed patch) is that item's failure alone; only
a transport failure ends the cluster's turn in this reconcile, and only the spoke's probe
decides whether the cluster is unreachable.

Skip-unchanged: an object whose watched copy carries the desired hash and still owns every
desired field (``hmls.domain.drift``) costs no request.  A field someone else changed is put
back (forced apply; driftPolicy Correct) or reported (driftPolicy Report).  Spokes are reached
through ``SpokeAPI``, so the engine can be tested with a fake spoke.

Inventory — what hmls may have created and may therefore prune or clean up — is the union of
what the previous status records (``Status.inventory``) with the objects the spoke
informers see carrying this CR's owner-uid label.  An object is deleted
only after a successful read shows that it carries that label.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from hmls.domain import plan as plan_mod
from hmls.domain import status as status_mod
from hmls.domain import traffic as traffic_mod
from hmls.domain.access import AccessPolicy
from hmls.domain.conditions import Condition
from hmls.domain.drift import detect
from hmls.domain.models import (
    FINALIZER,
    ORPHAN_ANNOTATION,
    InvalidSpec,
    Owner,
    TrafficSpec,
    deletion_policy,
    named_kinds,
    parse_spec,
    timestamp,
)
from hmls.domain.notices import Notice
from hmls.domain.render import (
    Desired,
    Fleet,
    ResourceRef,
    apply_order,
    scoped,
)
from hmls.domain.status import (
    APPLIED_OK,
    FAILED,
    UNREACHABLE,
    ItemResult,
    Pending,
    Status,
    TrafficStatus,
)
from hmls.engine import analysis, rollouts
from hmls.engine.spokes import NamespaceView, Observed, Ref
from hmls.kube import errors
from hmls.kube.client import Obj
from hmls.kube.resources import Resource
from hmls.metrics import Metrics

log = logging.getLogger("hmls.reconciler")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Outcome:
    converged: bool
    """False: something failed; the worker requeues with backoff."""
    requeue_after: float | None = None
    """Converged, but look again after this many seconds (traffic damping)."""


class SpokeAPI(Protocol):
    """What the reconciler needs of one cluster (``hmls.engine.spokes.Spoke``)."""

    name: str
    access: AccessPolicy

    @property
    def server(self) -> str: ...
    def unusable(self) -> tuple[str, str] | None: ...
    async def resource(self, api_version: str, kind: str) -> Resource: ...
    async def cached(self, resource: Resource, namespace: str | None, name: str
                     ) -> Observed | None: ...
    async def watch(self, resources: Iterable[Resource]) -> None: ...
    async def apply(self, body: Obj, resource: Resource, *, force: bool,
                    as_user: str | None = None) -> Observed: ...
    def owned(self, uid: str, kinds: Iterable[tuple[str, str]] = ()) -> list[Ref]: ...
    async def delete(self, resource: Resource, namespace: str | None, name: str, *,
                     owner_uid: str, as_user: str | None = None) -> bool: ...
    async def ensure_namespace(self, name: str, owner: Owner) -> bool: ...
    async def namespace(self, name: str) -> NamespaceView | None: ...


class FleetAPI(Protocol):
    """The registered clusters (``hmls.engine.spokes.Fleet``)."""

    def get(self, name: str) -> SpokeAPI | None: ...
    def names(self) -> list[str]: ...
    def not_registered(self, name: str) -> str: ...
    def reachability(self) -> Mapping[str, bool | None]: ...
    def labels(self) -> Fleet: ...


def _rejection(cluster: str, exc: errors.KubeError) -> tuple[str, str]:
    """The item's failure reason (``status.STALLING``, or one a retry may mend) and message
    for an API answer about that one object."""
    if isinstance(exc, errors.UnknownKind):
        return "UnknownKind", exc.message
    if isinstance(exc, errors.Unreachable):
        return UNREACHABLE, f"cluster {cluster} is unreachable: {exc.message}"
    if exc.status in (400, 422) or (exc.status == 500 and "typed patch" in exc.message):
        what, reason = "rejected", "Rejected"
    else:
        what, reason = {401: ("unauthorized", "Unauthorized"), 403: ("forbidden", "Forbidden"),
                        404: ("not found", FAILED), 409: ("conflict", "Conflict")}.get(
                            exc.status, ("failed", FAILED))
    code = f" (HTTP {exc.status})" if what == "failed" and exc.status else ""
    return reason, f"{what} by cluster {cluster}{code}: {exc.message}"


@dataclass(frozen=True)
class Applied:
    """The apply phase's result: one item result per index of the desired list."""

    items: dict[int, ItemResult]
    notices: list[Notice]


@dataclass(frozen=True)
class Routed:
    """The traffic phase's result."""

    status: TrafficStatus | None
    requeue_after: float | None
    condition: Condition
    notices: list[Notice] = field(default_factory=list)


@dataclass(frozen=True)
class Deleted:
    """A prune's or cleanup's result on one cluster."""

    pending: list[Pending]
    notices: list[Notice]


@dataclass
class _ClusterRun:
    """One cluster's part of one reconcile."""

    spoke: SpokeAPI
    owner: Owner
    force: bool
    correct_drift: bool
    unreachable: str = ""
    """Set by the first transport failure: the cluster's remaining items are not tried."""
    notices: list[Notice] = field(default_factory=list)
    """Drift put back and namespaces created, as Events to emit."""


class HubAPI(Protocol):
    """What the reconciler needs of the hub (``hmls.engine.hub.Hub``)."""

    revisions: rollouts.Revisions

    def get(self, namespace: str, name: str) -> Obj | None: ...
    async def set_finalizers(self, obj: Obj, finalizers: list[str]) -> Obj | None: ...
    async def write_status(self, obj: Obj, status: Status) -> Obj | None: ...
    async def emit(self, obj: Obj, *, type_: str, reason: str, message: str) -> None: ...
    def forget(self, uid: str) -> None: ...


class Reconciler:
    def __init__(self, *, hub: HubAPI, fleet: FleetAPI, metrics: Metrics,
                 now: Callable[[], dt.datetime] = _now,
                 prometheus: analysis.Prometheus | None = None) -> None:
        self.hub = hub
        self.prometheus = prometheus
        """Where a rollout's metric analysis queries (None: its measurements are
        inconclusive, and say why)."""
        self.fleet = fleet
        self.metrics = metrics
        self._not_applied: set[str] = set()
        self._now = now

    def _track(self, key: str, status: Status | None) -> None:
        """Keep hmls_hypermlservices_not_fully_applied in step with the last status seen."""
        if status is None or status.fully_applied:
            self._not_applied.discard(key)
        else:
            self._not_applied.add(key)
        self.metrics.not_fully_applied.set(len(self._not_applied))

    def _clock(self) -> str:
        return timestamp(self._now())

    # ----- entry point -------------------------------------------------------------
    async def reconcile(self, key: str) -> Outcome:
        """Reconcile one key."""
        namespace, name = key.split("/", 1)
        obj = self.hub.get(namespace, name)
        previous = None if obj is None else Status.of(obj)  # read once per reconcile
        self._track(key, previous)
        if obj is None or previous is None:
            return Outcome(True)
        if obj["metadata"].get("deletionTimestamp"):
            return Outcome(await self._finalize(obj, previous))
        if FINALIZER not in (obj["metadata"].get("finalizers") or []):
            updated = await self.hub.set_finalizers(obj, [*(obj["metadata"].get("finalizers") or []),
                                                       FINALIZER])
            if updated is None:
                return Outcome(True)
            obj = updated
        owner = Owner.of(obj)
        generation = int(obj["metadata"].get("generation") or 0)
        try:
            spec = parse_spec(obj.get("spec"))
        except InvalidSpec as exc:
            invalid = status_mod.invalid(generation=generation, previous=previous,
                                         now=self._clock(), message=str(exc))
            await self.hub.write_status(obj, invalid)
            self._track(key, invalid)
            return Outcome(True)
        raw_spec = obj.get("spec") or {}
        history = None
        if spec.rollout.strategy == "Progressive":
            history = await rollouts.history(
                self.hub.revisions, owner, list(raw_spec.get("workloads") or []),
                previous=previous, limit=spec.rollout.revision_history_limit)
        # plan (pure) -> apply per cluster -> traffic -> prune -> status value -> one write
        labels = self.fleet.labels()  # placement, analysis and tiers read the same labels
        planned = plan_mod.plan(owner=owner, spec=spec, raw_spec=raw_spec, fleet=labels,
                                previous=previous, history=history, now=self._now())
        desired = planned.desired
        inventory = previous.inventory()
        applied = await self.apply(owner, desired, force=spec.take_over,
                                   correct_drift=spec.drift_policy == "Correct")
        created = {(c, ref) for c, refs in inventory.items() for ref in refs}
        items = [_remember(applied.items[i], created) for i in range(len(desired))]
        notices = [*_failures(previous, items), *applied.notices]
        keep = _refs_by_cluster(desired)
        extra: list[Condition] = []
        if spec.drift_policy == "Report":
            extra.append(status_mod.in_sync(items))
        due = planned.rollout.due() if planned.rollout else {}
        measured = await analysis.measure(
            self.prometheus, due, owner=owner, labels=labels,
            now=planned.rollout.now, metrics=self.metrics) if planned.rollout and due else {}
        step = planned.finish(items, previous, measured)
        if step is not None:
            extra.append(step.condition)
        routed = None
        if spec.traffic is not None:
            drained = {c: f"drained for the rollout of revision {step.state.current}"
                       for c in step.drained} if step else {}
            routed = await self._traffic(owner, spec.traffic, items, previous, drained, labels)
            extra.append(routed.condition)
            notices += routed.notices
            if routed.status:
                keep.setdefault(spec.traffic.ingress_cluster, set()).update(
                    routed.status.objects)
        pending: list[Pending] = []
        kinds = _kinds(obj, inventory)
        placed = set(inventory) | set(keep)
        for name in sorted(placed | self._holders(owner, kinds, placed)):
            pruned = await self._prune(owner, name, inventory.get(name, set()),
                                       keep.get(name, set()), kinds)
            pending += pruned.pending
            notices += pruned.notices
        new = status_mod.aggregate(
            generation=generation, items=items, previous=previous, now=self._clock(),
            extra=tuple(extra), pending=pending, traffic=routed.status if routed else None,
            created_namespaces=await self._created_namespaces(desired),
            selected=status_mod.selected(spec, planned.chosen),
            rollout=status_mod.RolloutStatus(step.state, tuple(planned.rollout.clusters))
            if step and planned.rollout else None,
            behind=planned.behind(step) if step else None)
        await self.hub.write_status(obj, status_mod.fit(new))
        self._track(key, new)
        requeue_after = routed.requeue_after if routed else None
        if step is not None:
            notices += step.events
            for finished in step.finished:
                self.metrics.rollout_steps.labels(finished.result).inc()
                self.metrics.rollout_step_duration.labels(finished.result).observe(
                    finished.seconds)
            requeue_after = min((t for t in (requeue_after, step.requeue_after)
                                 if t is not None), default=None)
            if routed is not None and routed.status is not None and previous.traffic and (
                    previous.traffic.serving() - routed.status.serving()) & step.drained:
                requeue_after = 0.0  # the ingress just dropped a draining cluster: it goes on
        await self._emit(obj, notices)
        converged = not pending and all(i.applied for i in items) and (
            routed is None or routed.condition.status == "True")
        return Outcome(converged, requeue_after)

    async def _emit(self, obj: Obj, notices: Iterable[Notice]) -> None:
        for n in notices:
            await self.hub.emit(obj, type_=n.type, reason=n.reason, message=n.message)

    # ----- fan-out -----------------------------------------------------------------
    async def apply(self, owner: Owner, desired: list[Desired], *, force: bool = False,
                    correct_drift: bool = True) -> Applied:
        """The apply phase: every item, clusters in parallel; one result per item index of
        ``desired``, and the Events to emit."""
        by_cluster: dict[str, list[tuple[int, Desired]]] = {}
        for i, item in enumerate(desired):
            by_cluster.setdefault(item.cluster, []).append((i, item))
        done = await asyncio.gather(*(
            self._apply_cluster(owner, n, by_cluster[n], force=force,
                                correct_drift=correct_drift) for n in sorted(by_cluster)))
        return Applied({i: r for d in done for i, r in d.items.items()},
                       [n for d in done for n in d.notices])

    def _usable(self, name: str) -> tuple[SpokeAPI | None, str, str]:
        """The cluster's spoke, or None with the failure reason and message of its items."""
        spoke = self.fleet.get(name)
        if spoke is None:
            return None, "ClusterNotRegistered", self.fleet.not_registered(name)
        why = spoke.unusable()
        if why:
            return None, *why
        return spoke, "", ""

    async def _apply_cluster(self, owner: Owner, name: str, items: list[tuple[int, Desired]], *,
                             force: bool, correct_drift: bool) -> Applied:
        """Apply one cluster's items: resolve kinds and check access, make sure their
        namespaces exist, then apply in dependency order.  One result per item index; a
        failure is that item's, except a transport failure, which ends the cluster's turn."""
        spoke, reason, why = self._usable(name)
        refused = spoke.access.refuse_owner(name, owner.namespace) if spoke else None
        if spoke is None or refused:
            return Applied({i: _unapplied(name, item, *(
                ("InvalidManifest", item.error) if item.error else ("Refused", refused)
                if refused else (reason, why))) for i, item in items}, [])
        run = _ClusterRun(spoke, owner, force=force, correct_drift=correct_drift)
        results: dict[int, ItemResult] = {}
        resolved: list[tuple[int, Desired, Resource]] = []
        # the round trips a far-away cluster costs are paid side by side: every kind is
        # resolved at once (discovery), then the namespaces are made while the informers of
        # every kind list together, before the dependency groups go out one after another
        kinds = await asyncio.gather(*(self._kind(run, item) for _, item in items))
        for (i, item), kind in zip(items, kinds, strict=True):
            if isinstance(kind, Resource):
                resolved.append((i, item, kind))
            else:
                results[i] = _unapplied(name, item, *kind)
        missing, _ = await asyncio.gather(self._namespaces(run, resolved),
                                          spoke.watch({res for _, _, res in resolved}))
        ready: dict[int, tuple[int, Resource]] = {}
        for i, item, res in resolved:
            namespace_failure = missing.get(item.ref.namespace) if res.namespaced else None
            if namespace_failure:
                results[i] = _unapplied(name, item, *namespace_failure)
            else:
                ready[id(item)] = (i, res)
        for group in apply_order([item for _, item, _ in resolved if id(item) in ready]):
            done = await asyncio.gather(*(self._apply_one(run, item, ready[id(item)][1])
                                          for item in group))
            for item, result in zip(group, done, strict=True):
                results[ready[id(item)][0]] = result
        return Applied(results, run.notices)

    async def _kind(self, run: _ClusterRun, item: Desired) -> Resource | tuple[str, str]:
        """The item's Resource on the cluster, or why it cannot be applied there (reason,
        message): an invalid manifest, a kind not served, the cluster's access policy."""
        if item.error:
            return "InvalidManifest", item.error
        name = run.spoke.name
        try:
            res = await run.spoke.resource(item.ref.api_version, item.ref.kind)
        except errors.KubeError as exc:
            return self._failed(run, exc)
        refusal = run.spoke.access.refuse_object(
            name, kind=item.ref.kind, namespaced=res.namespaced,
            namespace=item.ref.namespace, owner_namespace=run.owner.namespace,
            api_version=item.ref.api_version, body=item.body)
        if refusal:
            self.metrics.apply_total.labels(name, "refused").inc()
            return "Refused", refusal
        return res

    async def _namespaces(self, run: _ClusterRun, resolved: list[tuple[int, Desired, Resource]]
                          ) -> dict[str, tuple[str, str]]:
        """Create the namespaces the namespaced items need and the cluster lacks (unless the
        manifests declare them); the failure (reason, message) per namespace that cannot be
        had."""
        declared = {item.ref.name for _, item, _ in resolved if item.ref.kind == "Namespace"}
        needed = sorted({item.ref.namespace for _, item, res in resolved if res.namespaced}
                        - declared)
        failed: dict[str, tuple[str, str]] = {}
        for namespace in needed:
            if run.unreachable:
                failed[namespace] = (UNREACHABLE, run.unreachable)
                continue
            try:
                if await run.spoke.ensure_namespace(namespace, run.owner):
                    run.notices.append(Notice("Normal", "NamespaceCreated",
                                              f"created namespace {namespace} on cluster "
                                              f"{run.spoke.name}"))
            except errors.KubeError as exc:
                reason, message = self._failed(run, exc)
                failed[namespace] = (reason, f"namespace {namespace} is missing on cluster "
                                     f"{run.spoke.name} and could not be created: {message}")
        return failed

    def _failed(self, run: _ClusterRun, exc: errors.KubeError) -> tuple[str, str]:
        self.metrics.apply_total.labels(run.spoke.name, "failed").inc()
        reason, message = _rejection(run.spoke.name, exc)
        if isinstance(exc, errors.Unreachable) and not run.unreachable:
            run.unreachable = message
        return reason, message

    async def _apply_one(self, run: _ClusterRun, item: Desired, res: Resource) -> ItemResult:
        name, owner = run.spoke.name, run.owner
        if run.unreachable:
            return _unapplied(name, item, UNREACHABLE, run.unreachable)
        body = scoped(item.body, res.namespaced)
        ns = item.ref.namespace if res.namespaced else None
        try:
            cached = await run.spoke.cached(res, ns, item.ref.name)
            drift = None
            if cached is not None:
                holder = cached.owner_uid
                if holder and holder != owner.uid:
                    self.metrics.apply_total.labels(name, "conflict").inc()
                    return _unapplied(name, item, "Conflict", (
                        f"conflict: {item.ref} on {name} is owned by another HyperMLService "
                        f"({cached.owner_key()})"))
                if cached.applied_hash == item.hash:
                    drift = detect(item.body, cached.ownership)
                    if drift is None:
                        self.metrics.apply_total.labels(name, "unchanged").inc()
                        return _observed(name, item, cached)
                    if not run.correct_drift:
                        self.metrics.apply_total.labels(name, "unchanged").inc()
                        return replace(_observed(name, item, cached), drift=str(drift))
            # an object this HyperMLService already owns takes the hub's content, whoever
            # changed it since; anything else is taken only with takeOver
            force = run.force or (run.correct_drift and cached is not None)
            applied = await run.spoke.apply(body, res, force=force,
                                            as_user=run.spoke.access.writer(owner.namespace))
            self.metrics.apply_total.labels(name, "applied").inc()
            if drift is not None:
                self.metrics.drift_corrected.labels(name).inc()
                run.notices.append(Notice("Warning", "DriftCorrected",
                                          f"{name}: {item.ref}: restored {drift}"))
            return replace(_observed(name, item, applied), written=True)
        except errors.KubeError as exc:
            return _unapplied(name, item, *self._failed(run, exc))

    async def _created_namespaces(self, desired: list[Desired]) -> list[tuple[str, str]]:
        """The namespaces these manifests live in that hmls created, per cluster."""
        out = []
        for cluster, namespace in sorted({(d.cluster, d.ref.namespace) for d in desired
                                          if d.ref.namespace and not d.error}):
            spoke, _, _ = self._usable(cluster)
            if spoke is None:
                continue
            try:
                found = await spoke.namespace(namespace)
            except errors.KubeError:
                continue
            if found is not None and found.created_by_hmls:
                out.append((cluster, namespace))
        return out

    async def _prune(self, owner: Owner, name: str, inventory: set[ResourceRef],
                     keep: set[ResourceRef], kinds: set[tuple[str, str]]) -> Deleted:
        """Delete this owner's objects on one cluster that are no longer desired."""
        spoke, _, why = self._usable(name)
        if spoke is None:
            return Deleted([Pending(name, ref, why) for ref in sorted(inventory - keep)], [])
        return await self._delete_owned(spoke, owner, inventory, keep=keep, kinds=kinds,
                                        reason="Pruned")

    def _holders(self, owner: Owner, kinds: set[tuple[str, str]], placed: set[str]) -> set[str]:
        """The usable clusters besides ``placed`` holding objects labelled with this owner:
        an apply whose status write never came (the replica was killed, or the spec moved on,
        in between) left them where the inventory does not look.  Another registration of a
        placed cluster's API server sees the placed objects, and is left alone; so while a
        placed cluster cannot be used (its server unknown) nothing is taken for a stray."""
        servers = set()
        for name in placed:
            spoke, _, _ = self._usable(name)
            if spoke is None:
                return set()
            servers.add(spoke.server)
        found = set()
        for name in self.fleet.names():
            spoke, _, _ = self._usable(name)
            if (name not in placed and spoke is not None and spoke.server not in servers
                    and spoke.owned(owner.uid, kinds)):
                found.add(name)
        return found

    async def _traffic(self, owner: Owner, spec: TrafficSpec, items: list[ItemResult],
                       previous: Status, drained: Mapping[str, str],
                       labels: Mapping[str, Mapping[str, str]]) -> Routed:
        """Plan and apply the HeadIngress objects.  Their apply is reported as any other:
        drift put back, namespaces created, and (once per new failure) ApplyFailed."""
        try:
            plan = traffic_mod.plan(owner=owner, traffic=spec, items=items,
                                    reachable=self.fleet.reachability(),
                                    previous=previous.traffic, now=self._now(), drained=drained,
                                    labels=labels)
        except ValueError as exc:
            return Routed(None, None, Condition("TrafficReady", "False", "InvalidTraffic",
                                                str(exc)))
        applied = await self._apply_cluster(owner, spec.ingress_cluster,
                                            list(enumerate(plan.objects)), force=False,
                                            correct_drift=True)
        failed = [r for r in applied.items.values() if not r.applied]
        if not failed:
            return Routed(plan.status, plan.requeue_after, plan.condition, applied.notices)
        cond = Condition("TrafficReady", "False", "IngressApplyFailed",
                         f"on ingress cluster {spec.ingress_cluster}: "
                         + "; ".join(f"{r.ref}: {r.message}" for r in failed[:3]))
        before = previous.condition("TrafficReady")
        new = before is None or before.message != cond.message
        # the ingress routes as it was last written: the routes stay those (a rollout's drain
        # waits for the ingress to drop its cluster, not for the plan to), and the objects
        # this plan names are kept with the earlier ones (some may have been written)
        last = previous.traffic if previous.traffic is not None and \
            previous.traffic.ingress_cluster == plan.status.ingress_cluster else None
        kept = replace(plan.status, routes=last.routes if last else (), objects=tuple(
            dict.fromkeys((*(last.objects if last else ()), *plan.status.objects))))
        return Routed(kept, plan.requeue_after, cond, [
            *applied.notices, *(Notice("Warning", "ApplyFailed",
                                       f"{r.cluster}: {r.ref}: {r.message}")
                                for r in failed if new)])

    # ----- prune and cleanup -------------------------------------------------------
    async def _delete_owned(self, spoke: SpokeAPI, owner: Owner, inventory: set[ResourceRef],
                            *, keep: set[ResourceRef], kinds: set[tuple[str, str]],
                            reason: str) -> Deleted:
        """Delete objects of this HyperMLService on the cluster that are not in keep: the
        pendingDeletions items for what could not be deleted, and an Event per deletion."""
        candidates = set(inventory)
        # a cluster-scoped object is the same object whatever namespace its manifest named
        kept_unscoped = {(r.api_version, r.kind, r.name) for r in keep}
        for res, namespace, obj_name in spoke.owned(owner.uid, kinds):
            if res.namespaced or (res.api_version, res.kind, obj_name) not in kept_unscoped:
                candidates.add(ResourceRef(res.api_version, res.kind, namespace, obj_name))
        pending: list[Pending] = []
        notices: list[Notice] = []
        for ref in sorted(candidates - keep):
            try:
                res = await spoke.resource(ref.api_version, ref.kind)
                ns = ref.namespace if res.namespaced else None
                if not await spoke.delete(res, ns, ref.name, owner_uid=owner.uid,
                                          as_user=spoke.access.writer(owner.namespace)):
                    continue  # gone, or not ours (any more): never touched
            except errors.UnknownKind:
                continue  # the kind is not served: nothing of it can exist
            except errors.KubeError as exc:
                pending.append(Pending(spoke.name, ref, _rejection(spoke.name, exc)[1]))
                continue
            self.metrics.prune_total.labels(spoke.name).inc()
            log.info("%s: deleted %s from %s", owner.key, ref, spoke.name)
            notices.append(Notice("Normal", reason, f"deleted {ref} from cluster {spoke.name}"))
        return Deleted(pending, notices)

    async def _finalize(self, obj: Obj, previous: Status) -> bool:
        meta = obj["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return True
        owner = Owner.of(obj)
        policy = deletion_policy(obj.get("spec"))
        orphaned = {c.strip() for c in (meta.get("annotations") or {}).get(
            ORPHAN_ANNOTATION, "").split(",") if c.strip()}
        inventory = previous.inventory()
        for known in self.fleet.names():
            inventory.setdefault(known, set())
        waiting: list[str] = []
        notices: list[Notice] = []
        kinds = _kinds(obj, inventory)
        if policy != "Orphan":
            for name, refs in sorted(inventory.items()):
                if "*" in orphaned or name in orphaned:
                    if refs:
                        notices.append(Notice("Warning", "Orphaned", (
                            f"left {len(refs)} objects on cluster {name} ({ORPHAN_ANNOTATION})")))
                    continue
                spoke, _, why = self._usable(name)
                if spoke is None:
                    if refs:
                        waiting.append(f"{name} ({len(refs)} objects; {why})")
                    continue
                deleted = await self._delete_owned(spoke, owner, refs, keep=set(),
                                                   kinds=kinds, reason="CleanedUp")
                notices += deleted.notices
                if deleted.pending:
                    waiting.append(f"{name} ({len(deleted.pending)} objects; "
                                   f"{deleted.pending[0].message})")
        await self._emit(obj, notices)
        if waiting:
            message = (f"waiting to delete objects on {'; '.join(waiting)}. To leave them and "
                       f"finish, annotate with {ORPHAN_ANNOTATION}=<clusters or *>")
            new = status_mod.cleanup_pending(previous=previous, message=message,
                                             generation=int(meta.get("generation") or 0),
                                             now=self._clock())
            await self.hub.write_status(obj, new)
            await self.hub.emit(obj, type_="Warning", reason="CleanupPending", message=message)
            return False
        if previous.rollout is not None:
            await self.hub.revisions.delete_all(owner)
        await self.hub.set_finalizers(obj, [f for f in meta.get("finalizers") or [] if f != FINALIZER])
        self.hub.forget(owner.uid)
        log.info("%s: cleanup done, finalizer removed", owner.key)
        return True



def _unapplied(cluster: str, item: Desired, failure: str, message: str) -> ItemResult:
    return ItemResult(cluster, item.ref, False, message, failure=failure)


def _observed(cluster: str, item: Desired, obj: Observed) -> ItemResult:
    status = obj.status  # decoded once: the item carries it and readiness reads it
    return ItemResult(cluster, item.ref, True, APPLIED_OK, status, obj.health(status))


def _kinds(obj: Obj, inventory: Mapping[str, set[ResourceRef]]) -> set[tuple[str, str]]:
    """(apiVersion, kind) of what this CR's manifests name (valid or not) and it created."""
    return named_kinds(obj.get("spec")) | {(r.api_version, r.kind)
                                           for refs in inventory.values() for r in refs}


def _failures(previous: Status, items: list[ItemResult]) -> list[Notice]:
    """Warning Events for items that newly failed to apply or were found changed."""
    before = previous.messages()
    return [*(Notice("Warning", "ApplyFailed", f"{i.cluster}: {i.ref}: {i.message}")
              for i in items if not i.applied and before.get((i.cluster, i.ref)) != i.message),
            *(Notice("Warning", "DriftDetected", f"{i.cluster}: {i.ref}: {i.drift}")
              for i in items if i.drift)]


def _remember(item: ItemResult, created: set[tuple[str, ResourceRef]]) -> ItemResult:
    """A failing item that hmls had applied before keeps ``created`` (it stays inventory)."""
    if not item.applied and (item.cluster, item.ref) in created:
        return replace(item, created=True)
    return item


def _refs_by_cluster(desired: list[Desired]) -> dict[str, set[ResourceRef]]:
    """What is still desired on each cluster: never pruned.  An item that cannot be rendered
    (an override that fails) is still desired: the object already there stays as it is."""
    out: dict[str, set[ResourceRef]] = {}
    for item in desired:
        if item.ref.name:
            out.setdefault(item.cluster, set()).add(item.ref)
    return out
