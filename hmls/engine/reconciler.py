"""Reconcile one HyperMLService: read → render → fan-out apply → prune → status, once.

Level-triggered and keyed by ``namespace/name``: every call recomputes everything from the
hub object (from the hub informer's store) and the spoke informers' stores.  A failure on one
cluster or one manifest becomes an ``ItemResult`` and never stops the others; the outcome
tells the worker whether to requeue with backoff.

Inventory — what hmls may have created and may therefore prune or clean up — is the union of
the previous status's applied items, ``pendingDeletions`` and ``traffic.objects`` with the
objects the spoke informers see carrying this CR's owner-uid label.  An object is deleted
only after a successful read shows that it carries that label.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hmls.domain import status as status_mod
from hmls.domain import traffic as traffic_mod
from hmls.domain.models import (
    API_VERSION,
    FIELD_MANAGER,
    FINALIZER,
    HASH_ANNOTATION,
    KIND,
    ORPHAN_ANNOTATION,
    OWNER_UID,
    PLURAL,
    InvalidSpec,
    Owner,
    TrafficSpec,
    parse_spec,
)
from hmls.domain.render import Desired, ResourceRef, apply_order, render
from hmls.domain.status import APPLIED_OK, Condition, ItemResult
from hmls.engine.feedback import SpokeWatches
from hmls.engine.hubcache import HubCache
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj, Resource
from hmls.kube.events import EventRecorder
from hmls.kube.registry import Cluster, ClusterRegistry
from hmls.metrics import Metrics

log = logging.getLogger("hmls.reconciler")

HMLS = Resource(API_VERSION, KIND, PLURAL, namespaced=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Outcome:
    converged: bool
    """False: something failed; the worker requeues with backoff."""
    requeue_after: float | None = None
    """Converged, but look again after this many seconds (traffic damping)."""


class Reconciler:
    def __init__(self, *, hub: ClusterClient, hub_store: HubCache, registry: ClusterRegistry,
                 watches: SpokeWatches, events: EventRecorder, metrics: Metrics,
                 per_cluster_concurrency: int = 8, now: Callable[[], dt.datetime] = _now) -> None:
        self.hub = hub
        self.store = hub_store
        self.registry = registry
        self.watches = watches
        self.events = events
        self.metrics = metrics
        self._cap = per_cluster_concurrency
        self._not_applied: set[str] = set()
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._now = now

    def _track(self, key: str, obj: Obj | None) -> None:
        """Keep hmls_hypermlservices_not_fully_applied in step with the last status seen."""
        fully = obj is None or any(
            c.get("type") == "FullyApplied" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or [])
        if fully:
            self._not_applied.discard(key)
        else:
            self._not_applied.add(key)
        self.metrics.not_fully_applied.set(len(self._not_applied))

    def _clock(self) -> str:
        return self._now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _sem(self, cluster: str) -> asyncio.Semaphore:
        sem = self._sems.get(cluster)
        if sem is None:
            sem = self._sems[cluster] = asyncio.Semaphore(self._cap)
        return sem

    # ----- entry point -------------------------------------------------------------
    async def reconcile(self, key: str) -> Outcome:
        """Reconcile one key."""
        namespace, name = key.split("/", 1)
        obj = self.store.get(namespace, name)
        self._track(key, obj)
        if obj is None:
            return Outcome(True)
        if obj["metadata"].get("deletionTimestamp"):
            return Outcome(await self._finalize(obj))
        if FINALIZER not in (obj["metadata"].get("finalizers") or []):
            updated = await self._set_finalizers(obj, [*(obj["metadata"].get("finalizers") or []),
                                                       FINALIZER])
            if updated is None:
                return Outcome(True)
            obj = updated
        owner = Owner.of(obj)
        generation = int(obj["metadata"].get("generation") or 0)
        previous = obj.get("status") or {}
        try:
            spec = parse_spec(obj.get("spec"))
        except InvalidSpec as exc:
            invalid = status_mod.invalid(generation=generation, previous=previous,
                                         now=self._clock(), message=str(exc))
            await self._write_status(obj, invalid)
            self._track(key, {"status": invalid})
            return Outcome(True)
        desired = render(owner, spec)
        inventory = _inventory(previous)
        applied = await self._apply_all(owner, desired, force=spec.take_over)
        created = {(c, ref) for c, refs in inventory.items() for ref in refs}
        items = [_remember(applied[d.cluster][i], created) for i, d in enumerate(desired)]
        keep = _refs_by_cluster(desired)
        extra: list[Condition] = []
        traffic_status, requeue_after, traffic_ok = None, None, True
        if spec.traffic is not None:
            traffic_status, cond, requeue_after = await self._traffic(owner, spec.traffic, items,
                                                                      previous)
            traffic_ok = cond.status == "True"
            extra.append(cond)
            if traffic_status:
                ingress = spec.traffic.ingress_cluster
                keep.setdefault(ingress, set()).update(
                    ResourceRef.from_status(o) for o in traffic_status["objects"])
        pending: list[dict[str, Any]] = []
        for name in sorted(set(inventory) | set(keep)):
            pending += await self._prune(owner, name, inventory.get(name, set()),
                                         keep.get(name, set()))
        new = status_mod.aggregate(generation=generation, items=items, previous=previous,
                                   now=self._clock(), extra=tuple(extra))
        new["pendingDeletions"] = pending or None
        new["traffic"] = traffic_status
        await self._write_status(obj, status_mod.fit(new))
        self._track(key, {"status": new})
        await self._announce(obj, previous, items)
        converged = not pending and all(i.applied for i in items) and traffic_ok
        return Outcome(converged, requeue_after)

    # ----- fan-out -----------------------------------------------------------------
    async def _apply_all(self, owner: Owner, desired: list[Desired], *, force: bool
                         ) -> dict[str, dict[int, ItemResult]]:
        """Apply every item, clusters in parallel; results keyed by cluster, then item index."""
        by_cluster: dict[str, list[tuple[int, Desired]]] = {}
        for i, item in enumerate(desired):
            by_cluster.setdefault(item.cluster, []).append((i, item))
        names = sorted(by_cluster)
        done = await asyncio.gather(*(self._apply_cluster(owner, n, by_cluster[n], force=force)
                                      for n in names))
        return dict(zip(names, done, strict=True))

    def _usable(self, name: str) -> tuple[Cluster | None, str]:
        cluster = self.registry.get(name)
        if cluster is None:
            return None, self.registry.not_registered(name)
        if cluster.client is None:
            return None, f"cluster {name} cannot be used: {cluster.error}"
        if cluster.reachable is False:
            return None, f"cluster {name} is unreachable: {cluster.last_error}"
        return cluster, ""

    async def _apply_cluster(self, owner: Owner, name: str, items: list[tuple[int, Desired]], *,
                             force: bool = False) -> dict[int, ItemResult]:
        """Apply one cluster's items in dependency order; one result per item index."""
        cluster, why = self._usable(name)
        refused = cluster.access.refuse_owner(name, owner.namespace) if cluster else None
        if cluster is None or refused:
            return {i: ItemResult(name, item.ref, False, item.error or refused or why)
                    for i, item in items}
        results: dict[int, ItemResult] = {}
        unreachable: list[str] = []
        indexed = {id(item): i for i, item in items}
        for group in apply_order([item for _, item in items]):
            done = await asyncio.gather(*(
                self._apply_one(cluster, owner, item, unreachable, force) for item in group))
            for item, result in zip(group, done, strict=True):
                results[indexed[id(item)]] = result
        if unreachable:
            self.registry.report(name, reachable=False, error=unreachable[0])
        return results

    async def _prune(self, owner: Owner, name: str, inventory: set[ResourceRef],
                     keep: set[ResourceRef]) -> list[dict[str, Any]]:
        """Delete this owner's objects on one cluster that are no longer desired."""
        cluster, why = self._usable(name)
        if cluster is None:
            return [_pending(name, ref, why) for ref in sorted(inventory - keep)]
        return await self._delete_owned(cluster, owner, inventory, keep=keep, reason="Pruned")

    async def _traffic(self, owner: Owner, spec: TrafficSpec, items: list[ItemResult],
                       previous: dict[str, Any]
                       ) -> tuple[dict[str, Any] | None, Condition, float | None]:
        """Plan and apply the HeadIngress objects: (status.traffic, TrafficReady, requeue)."""
        reachable = {c.name: c.reachable for c in self.registry.all()}
        try:
            plan = traffic_mod.plan(owner=owner, traffic=spec, items=items, reachable=reachable,
                                    previous=previous.get("traffic"), now=self._now())
        except ValueError as exc:
            return None, Condition("TrafficReady", "False", "InvalidTraffic", str(exc)), None
        results = await self._apply_cluster(owner, spec.ingress_cluster,
                                            list(enumerate(plan.objects)))
        failed = [f"{r.ref}: {r.message}" for r in results.values() if not r.applied]
        if failed:
            cond = Condition("TrafficReady", "False", "IngressApplyFailed",
                             f"on ingress cluster {spec.ingress_cluster}: " + "; ".join(failed[:3]))
            return plan.status, cond, plan.requeue_after
        return plan.status, plan.condition, plan.requeue_after

    async def _apply_one(self, cluster: Cluster, owner: Owner, item: Desired,
                         unreachable: list[str], force: bool) -> ItemResult:
        name = cluster.name
        assert cluster.client is not None
        if item.error:
            return ItemResult(name, item.ref, False, item.error)
        if unreachable:
            return ItemResult(name, item.ref, False,
                              f"cluster {name} is unreachable: {unreachable[0]}")
        try:
            res = await cluster.client.resource(item.ref.api_version, item.ref.kind)
            refused = cluster.access.refuse_object(
                name, kind=item.ref.kind, namespaced=res.namespaced, namespace=item.ref.namespace,
                owner_namespace=owner.namespace)
            if refused:
                self.metrics.apply_total.labels(name, "refused").inc()
                return ItemResult(name, item.ref, False, refused)
            body = item.body
            if not res.namespaced and body["metadata"].get("namespace"):
                body = {**body, "metadata": {k: v for k, v in body["metadata"].items()
                                             if k != "namespace"}}
            inf = await self.watches.informer(cluster, res)
            ns = item.ref.namespace if res.namespaced else None
            cached = inf.get(ns, item.ref.name)
            if cached is not None:
                labels = cached["metadata"]["labels"]
                holder = labels.get(OWNER_UID)
                if holder and holder != owner.uid:
                    self.metrics.apply_total.labels(name, "conflict").inc()
                    return ItemResult(name, item.ref, False, (
                        f"conflict: {item.ref} on {name} is owned by another HyperMLService "
                        f"({labels.get('hmls.tensorstack.dev/owner-namespace')}/"
                        f"{labels.get('hmls.tensorstack.dev/owner-name')})"))
                if cached["metadata"]["annotations"].get(HASH_ANNOTATION) == item.hash:
                    self.metrics.apply_total.labels(name, "unchanged").inc()
                    return ItemResult(name, item.ref, True, APPLIED_OK, cached.get("status"))
            async with self._sem(name):
                applied = await cluster.client.apply(body, field_manager=FIELD_MANAGER,
                                                     resource=res, force=force)
            inf.observe(applied)
            self.metrics.apply_total.labels(name, "applied").inc()
            return ItemResult(name, item.ref, True, APPLIED_OK, applied.get("status"))
        except errors.Unreachable as exc:
            unreachable.append(exc.message)
            self.metrics.apply_total.labels(name, "failed").inc()
            return ItemResult(name, item.ref, False, f"cluster {name} is unreachable: {exc.message}")
        except errors.UnknownKind as exc:
            self.metrics.apply_total.labels(name, "failed").inc()
            return ItemResult(name, item.ref, False, exc.message)
        except errors.KubeError as exc:
            self.metrics.apply_total.labels(name, "failed").inc()
            what = {409: "conflict", 422: "rejected", 403: "forbidden"}.get(exc.status, "failed")
            return ItemResult(name, item.ref, False, f"{what} by cluster {name}: {exc.message}")

    # ----- prune and cleanup -------------------------------------------------------
    async def _delete_owned(self, cluster: Cluster, owner: Owner, inventory: set[ResourceRef],
                            *, keep: set[ResourceRef], reason: str) -> list[dict[str, Any]]:
        """Delete objects of this owner on the cluster that are not in keep.

        Returns pendingDeletions items for what could not be deleted."""
        assert cluster.client is not None
        client = cluster.client
        candidates = set(inventory)
        # a cluster-scoped object is the same object whatever namespace its manifest named
        kept_unscoped = {(r.api_version, r.kind, r.name) for r in keep}
        for res, namespace, obj_name in self.watches.owned(cluster.name, owner.uid):
            if res.namespaced or (res.api_version, res.kind, obj_name) not in kept_unscoped:
                candidates.add(ResourceRef(res.api_version, res.kind, namespace, obj_name))
        pending: list[dict[str, Any]] = []
        for ref in sorted(candidates - keep):
            try:
                res = await client.resource(ref.api_version, ref.kind)
            except errors.UnknownKind:
                continue  # the kind is not served: nothing of it can exist
            except errors.KubeError as exc:
                pending.append(_pending(cluster.name, ref, exc.message))
                continue
            ns = ref.namespace if res.namespaced else None
            try:
                live = await client.get(res, ns, ref.name)
                if live is None:
                    continue
                labels = (live.get("metadata") or {}).get("labels") or {}
                if labels.get(OWNER_UID) != owner.uid:
                    continue  # not ours (any more): never touch it
                async with self._sem(cluster.name):
                    await client.delete(res, ns, ref.name, uid=live["metadata"].get("uid"))
            except errors.KubeError as exc:
                pending.append(_pending(cluster.name, ref, exc.message))
                if isinstance(exc, errors.Unreachable):
                    self.registry.report(cluster.name, reachable=False, error=exc.message)
                continue
            self.metrics.prune_total.labels(cluster.name).inc()
            log.info("%s: deleted %s from %s", owner.key, ref, cluster.name)
            current = self.store.get(owner.namespace, owner.name)
            if current is not None:
                await self.events.emit(current, type_="Normal", reason=reason,
                                       message=f"deleted {ref} from cluster {cluster.name}")
        return pending

    async def _finalize(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return True
        owner = Owner.of(obj)
        previous = obj.get("status") or {}
        policy = (obj.get("spec") or {}).get("deletionPolicy", "Delete")
        orphaned = {c.strip() for c in (meta.get("annotations") or {}).get(
            ORPHAN_ANNOTATION, "").split(",") if c.strip()}
        inventory = _inventory(previous)
        for known in self.registry.all():
            inventory.setdefault(known.name, set())
        waiting: list[str] = []
        if policy != "Orphan":
            for name, refs in sorted(inventory.items()):
                if "*" in orphaned or name in orphaned:
                    if refs:
                        await self.events.emit(obj, type_="Warning", reason="Orphaned", message=(
                            f"left {len(refs)} objects on cluster {name} ({ORPHAN_ANNOTATION})"))
                    continue
                cluster, why = self._usable(name)
                if cluster is None:
                    if refs:
                        waiting.append(f"{name} ({len(refs)} objects; {why})")
                    continue
                left = await self._delete_owned(cluster, owner, refs, keep=set(),
                                                reason="CleanedUp")
                if left:
                    waiting.append(f"{name} ({len(left)} objects; {left[0]['message']})")
        if waiting:
            message = (f"waiting to delete objects on {'; '.join(waiting)}. To leave them and "
                       f"finish, annotate with {ORPHAN_ANNOTATION}=<clusters or *>")
            cond = Condition("CleanupPending", "True", "ClusterUnavailable", message)
            generation = int(meta.get("generation") or 0)
            new = {**previous, "observedGeneration": generation,
                   "conditions": [
                       *(c for c in previous.get("conditions") or [] if c.get("type") != cond.type),
                       *status_mod.merge_conditions(previous.get("conditions") or [], [cond],
                                                    generation=generation, now=self._clock())]}
            await self._write_status(obj, new)
            await self.events.emit(obj, type_="Warning", reason="CleanupPending", message=message)
            return False
        await self._set_finalizers(obj, [f for f in meta.get("finalizers") or [] if f != FINALIZER])
        log.info("%s: cleanup done, finalizer removed", owner.key)
        return True

    # ----- hub writes --------------------------------------------------------------
    async def _set_finalizers(self, obj: Obj, finalizers: list[str]) -> Obj | None:
        """The updated object, or None if it is gone already."""
        meta = obj["metadata"]
        patch = {"metadata": {"finalizers": finalizers,
                              "resourceVersion": meta["resourceVersion"]}}
        try:
            updated = await self.hub.patch(HMLS, meta["namespace"], meta["name"], patch,
                                           field_manager=FIELD_MANAGER)
        except errors.NotFound:
            return None
        self.store.observe(updated)
        return updated

    async def _write_status(self, obj: Obj, new: dict[str, Any]) -> None:
        current = obj.get("status") or {}
        wanted = {k: v for k, v in new.items() if v is not None}
        if wanted == current:
            return
        patch = {"status": {**dict.fromkeys(current), **new}}
        meta = obj["metadata"]
        try:
            updated = await self.hub.patch(HMLS, meta["namespace"], meta["name"], patch,
                                           subresource="status", field_manager=FIELD_MANAGER)
        except errors.NotFound:
            return
        self.metrics.status_writes.inc()
        self.store.observe(updated)

    async def _announce(self, obj: Obj, previous: dict[str, Any], items: list[ItemResult]) -> None:
        """Warning events for items that newly failed to apply."""
        before = {(p.get("cluster"), ResourceRef.from_status(p.get("resource") or {})):
                  p.get("appliedMessage") for p in previous.get("aggregatedStatus") or []}
        for item in items:
            if not item.applied and before.get((item.cluster, item.ref)) != item.message:
                await self.events.emit(obj, type_="Warning", reason="ApplyFailed",
                                       message=f"{item.cluster}: {item.ref}: {item.message}")


def _pending(cluster: str, ref: ResourceRef, message: str) -> dict[str, Any]:
    return {"cluster": cluster, "resource": ref.to_status(), "message": message}


def _remember(item: ItemResult, created: set[tuple[str, ResourceRef]]) -> ItemResult:
    """A failing item that hmls had applied before keeps ``created`` (it stays inventory)."""
    if not item.applied and (item.cluster, item.ref) in created:
        return replace(item, created=True)
    return item


def _inventory(status: dict[str, Any]) -> dict[str, set[ResourceRef]]:
    """What a previous status says hmls created, by cluster: items applied now or before
    (``created``), and pending deletions.  Items that were never applied (a misspelt or
    unregistered cluster, a refused manifest) are not inventory."""
    out: dict[str, set[ResourceRef]] = {}
    made = [i for i in status.get("aggregatedStatus") or [] if i.get("applied") or i.get("created")]
    for item in [*made, *(status.get("pendingDeletions") or [])]:
        cluster, resource = item.get("cluster"), item.get("resource")
        if cluster and resource:
            out.setdefault(cluster, set()).add(ResourceRef.from_status(resource))
    ingress, refs = traffic_mod.traffic_refs(status)
    if ingress:
        out.setdefault(ingress, set()).update(refs)
    return out


def _refs_by_cluster(desired: list[Desired]) -> dict[str, set[ResourceRef]]:
    out: dict[str, set[ResourceRef]] = {}
    for item in desired:
        if not item.error:
            out.setdefault(item.cluster, set()).add(item.ref)
    return out
