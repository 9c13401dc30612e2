"""Spoke watches: what hmls applied, as the spokes see it, feeding back into the queue.

One Informer per (cluster, resource) that hmls applies, label-selected on the owner-uid
label, started the first time a reconcile needs it.  The store holds trimmed copies
(metadata and status, never spec or Secret data): the reconciler reads it to skip unchanged
applies, to find what to prune and to report status.  An event that changes an object's
status, hash annotation or existence enqueues the owning HyperMLService.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hmls.domain.models import HASH_ANNOTATION, OWNER_UID
from hmls.kube import errors
from hmls.kube.client import Obj, Resource
from hmls.kube.registry import Cluster
from hmls.kube.watching import Informer
from hmls.metrics import Metrics

log = logging.getLogger("hmls.feedback")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def trim(obj: Obj) -> Obj:
    """Keep what the controller needs: identity, owner labels, hash annotation, status."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    out: Obj = {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": meta.get("labels") or {},
            "annotations": {HASH_ANNOTATION: annotations[HASH_ANNOTATION]}
            if HASH_ANNOTATION in annotations else {},
        },
    }
    if "status" in obj and obj.get("kind") != "Secret":
        out["status"] = obj["status"]
    return out


def _interesting(old: Obj | None, new: Obj | None) -> bool:
    if old is None or new is None:
        return True
    return bool(old.get("status") != new.get("status")
                or old["metadata"]["annotations"] != new["metadata"]["annotations"]
                or old["metadata"]["labels"] != new["metadata"]["labels"])


class SpokeWatches:
    def __init__(self, *, spawn: Spawn, metrics: Metrics, on_owner: Callable[[str], None],
                 on_unreachable: Callable[[str, str], None], sync_timeout: float = 10.0) -> None:
        self._spawn = spawn
        self._metrics = metrics
        self._on_owner = on_owner
        self._on_unreachable = on_unreachable
        self._sync_timeout = sync_timeout
        # cluster -> owner uid -> {(resource, namespace, name)}: what each HyperMLService owns
        self._owned: dict[str, dict[str, set[tuple[Resource, str, str]]]] = {}
        # cluster name -> (client generation, {resource: (informer, task)})
        self._by_cluster: dict[str, tuple[int, dict[Resource, tuple[Informer, asyncio.Task[None]]]]] = {}

    def _handler(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if not _interesting(old, new):
            return
        obj = new or old or {}
        uid = (obj.get("metadata", {}).get("labels") or {}).get(OWNER_UID)
        if uid:
            self._on_owner(uid)

    def _index(self, cluster: str, resource: Resource, old: Obj | None, new: Obj | None) -> None:
        owned = self._owned.setdefault(cluster, {})
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            meta = obj["metadata"]
            uid = meta["labels"].get(OWNER_UID)
            if not uid:
                continue
            entry = (resource, meta.get("namespace") or "", meta["name"])
            if add:
                owned.setdefault(uid, set()).add(entry)
            elif uid in owned:
                owned[uid].discard(entry)
                if not owned[uid]:
                    del owned[uid]

    def owned(self, cluster: str, uid: str) -> list[tuple[Resource, str, str]]:
        """(resource, namespace, name) of the watched objects carrying this owner uid."""
        return sorted(self._owned.get(cluster, {}).get(uid, ()), key=lambda e: (e[0].kind, e[1], e[2]))

    async def informer(self, cluster: Cluster, resource: Resource) -> Informer:
        """The synced informer for this cluster and resource, started if needed."""
        assert cluster.client is not None
        entry = self._by_cluster.get(cluster.name)
        if entry is None or entry[0] != cluster.generation:
            self.stop(cluster.name)  # client replaced: restart on the new one
            entry = (cluster.generation, {})
            self._by_cluster[cluster.name] = entry
        found = entry[1].get(resource)
        if found is None:
            def restarted(reason: str, c: str = cluster.name, r: str = resource.plural) -> None:
                self._metrics.watch_restarts.labels(c, r, reason).inc()
                if isinstance(inf.last_exception, errors.Unreachable):
                    self._on_unreachable(c, inf.last_exception.message)

            def handler(kind: str, old: Obj | None, new: Obj | None,
                        c: str = cluster.name, r: Resource = resource) -> None:
                self._index(c, r, old, new)
                self._handler(kind, old, new)

            inf = Informer(cluster.client, resource, on_event=handler,
                           label_selector=OWNER_UID, transform=trim, on_restart=restarted)
            found = (inf, self._spawn(inf.run()))
            entry[1][resource] = found
        inf = found[0]
        if not inf.synced.is_set():
            try:
                await asyncio.wait_for(inf.attempted.wait(), self._sync_timeout)
            except TimeoutError:
                raise errors.Unreachable(
                    f"could not list {resource.plural} within {self._sync_timeout:.0f}s") from None
            if not inf.synced.is_set():
                raise errors.Unreachable(f"could not list {resource.plural}: {inf.last_error}")
        return inf

    def stop(self, cluster: str) -> None:
        self._owned.pop(cluster, None)
        entry = self._by_cluster.pop(cluster, None)
        if entry:
            for _, task in entry[1].values():
                task.cancel()
