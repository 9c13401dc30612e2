"""Reconcile one HyperMLService: read → render → fan-out apply → prune → status, once.

Level-triggered and keyed by ``namespace/name``: every call recomputes everything from the
hub object (from the hub informer's store) and the spoke informers' stores.  A failure on one
cluster or one manifest becomes an ``ItemResult`` and never stops the others; the outcome
tells the worker whether to requeue with backoff.

Inventory — what hmls may have created and may therefore prune or clean up — is the union of
the previous ``status.aggregatedStatus`` and ``status.pendingDeletions`` items with the
objects the spoke informers see carrying this CR's owner-uid label.  An object is deleted
only after a successful read shows that it carries that label.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hmls.domain import status as status_mod
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
from hmls.kube.watching import Informer
from hmls.metrics import Metrics

log = logging.getLogger("hmls.reconciler")

HMLS = Resource(API_VERSION, KIND, PLURAL, namespaced=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ClusterOutcome:
    results: dict[int, ItemResult] = field(default_factory=dict)
    """Keyed by the index of the Desired item."""
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Objects that should be deleted but could not be (pendingDeletions items)."""
    ok: bool = True


class Reconciler:
    def __init__(self, *, hub: ClusterClient, hub_store: HubCache, registry: ClusterRegistry,
                 watches: SpokeWatches, events: EventRecorder, metrics: Metrics,
                 per_cluster_concurrency: int = 8, clock: Callable[[], str] = _now) -> None:
        self.hub = hub
        self.store = hub_store
        self.registry = registry
        self.watches = watches
        self.events = events
        self.metrics = metrics
        self._cap = per_cluster_concurrency
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._clock = clock

    def _sem(self, cluster: str) -> asyncio.Semaphore:
        sem = self._sems.get(cluster)
        if sem is None:
            sem = self._sems[cluster] = asyncio.Semaphore(self._cap)
        return sem

    # ----- entry point -------------------------------------------------------------
    async def reconcile(self, key: str) -> bool:
        """Reconcile one key; True when converged, False to requeue with backoff."""
        namespace, name = key.split("/", 1)
        obj = self.store.get(namespace, name)
        if obj is None:
            return True
        if obj["metadata"].get("deletionTimestamp"):
            return await self._finalize(obj)
        if FINALIZER not in (obj["metadata"].get("finalizers") or []):
            obj = await self._set_finalizers(obj, [*(obj["metadata"].get("finalizers") or []),
                                                   FINALIZER])
        owner = Owner.of(obj)
        generation = int(obj["metadata"].get("generation") or 0)
        previous = obj.get("status") or {}
        try:
            spec = parse_spec(obj.get("spec"))
        except InvalidSpec as exc:
            await self._write_status(obj, status_mod.invalid(
                generation=generation, previous=previous, now=self._clock(), message=str(exc)))
            return True
        desired = render(owner, spec)
        outcomes = await self._sync_all(owner, desired, _inventory(previous))
        items = [outcomes[d.cluster].results[i] for i, d in enumerate(desired)]
        pending = [p for o in outcomes.values() for p in o.pending]
        new = status_mod.aggregate(generation=generation, items=items, previous=previous,
                                   now=self._clock())
        new["pendingDeletions"] = pending or None
        await self._write_status(obj, new)
        await self._announce(obj, previous, items)
        return all(o.ok for o in outcomes.values()) and all(i.applied for i in items)

    # ----- fan-out -----------------------------------------------------------------
    async def _sync_all(self, owner: Owner, desired: list[Desired],
                        inventory: dict[str, set[ResourceRef]]) -> dict[str, ClusterOutcome]:
        by_cluster: dict[str, list[tuple[int, Desired]]] = {}
        for i, item in enumerate(desired):
            by_cluster.setdefault(item.cluster, []).append((i, item))
        clusters = sorted(set(by_cluster) | set(inventory))
        done = await asyncio.gather(*(
            self._sync_cluster(owner, c, by_cluster.get(c, []), inventory.get(c, set()))
            for c in clusters))
        return dict(zip(clusters, done, strict=True))

    def _usable(self, name: str) -> tuple[Cluster | None, str]:
        cluster = self.registry.get(name)
        if cluster is None:
            return None, self.registry.not_registered(name)
        if cluster.client is None:
            return None, f"cluster {name} cannot be used: {cluster.error}"
        if cluster.reachable is False:
            return None, f"cluster {name} is unreachable: {cluster.last_error}"
        return cluster, ""

    async def _sync_cluster(self, owner: Owner, name: str, items: list[tuple[int, Desired]],
                            inventory: set[ResourceRef]) -> ClusterOutcome:
        out = ClusterOutcome()
        cluster, why = self._usable(name)
        if cluster is None:
            for i, item in items:
                out.results[i] = ItemResult(name, item.ref, False, item.error or why)
            wanted = {item.ref for _, item in items}
            out.pending = [_pending(name, ref, why) for ref in sorted(inventory - wanted)]
            out.ok = False
            return out
        unreachable: list[str] = []
        indexed = dict((id(item), i) for i, item in items)
        for group in apply_order([item for _, item in items]):
            results = await asyncio.gather(*(
                self._apply_one(cluster, owner, item, unreachable) for item in group))
            for item, result in zip(group, results, strict=True):
                out.results[indexed[id(item)]] = result
        if unreachable:
            self.registry.report(name, reachable=False, error=unreachable[0])
            wanted = {item.ref for _, item in items}
            out.pending = [_pending(name, ref, f"cluster {name} is unreachable: {unreachable[0]}")
                           for ref in sorted(inventory - wanted)]
            out.ok = False
            return out
        wanted = {item.ref for _, item in items if not item.error}
        leftovers = await self._delete_owned(cluster, owner, inventory, keep=wanted,
                                             reason="Pruned")
        out.pending = leftovers
        out.ok = not leftovers
        return out

    async def _apply_one(self, cluster: Cluster, owner: Owner, item: Desired,
                         unreachable: list[str]) -> ItemResult:
        name = cluster.name
        assert cluster.client is not None
        if item.error:
            return ItemResult(name, item.ref, False, item.error)
        if unreachable:
            return ItemResult(name, item.ref, False,
                              f"cluster {name} is unreachable: {unreachable[0]}")
        try:
            res = await cluster.client.resource(item.ref.api_version, item.ref.kind)
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
                                                     resource=res)
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
        candidates: dict[ResourceRef, Informer | None] = {ref: None for ref in inventory}
        for inf in self.watches.informers(cluster.name):
            for obj in list(inf.store.values()):
                if obj["metadata"]["labels"].get(OWNER_UID) == owner.uid:
                    ref = ResourceRef(inf.resource.api_version, inf.resource.kind,
                                      obj["metadata"].get("namespace") or "",
                                      obj["metadata"]["name"])
                    candidates[ref] = inf
        pending: list[dict[str, Any]] = []
        for ref in sorted(set(candidates) - keep):
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
    async def _set_finalizers(self, obj: Obj, finalizers: list[str]) -> Obj:
        meta = obj["metadata"]
        patch = {"metadata": {"finalizers": finalizers,
                              "resourceVersion": meta["resourceVersion"]}}
        updated = await self.hub.patch(HMLS, meta["namespace"], meta["name"], patch,
                                       field_manager=FIELD_MANAGER)
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


def _inventory(status: dict[str, Any]) -> dict[str, set[ResourceRef]]:
    out: dict[str, set[ResourceRef]] = {}
    for item in [*(status.get("aggregatedStatus") or []), *(status.get("pendingDeletions") or [])]:
        cluster, resource = item.get("cluster"), item.get("resource")
        if cluster and resource:
            out.setdefault(cluster, set()).add(ResourceRef.from_status(resource))
    return out
