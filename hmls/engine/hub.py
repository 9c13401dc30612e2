"""The hub as the reconciler sees it: the cached HyperMLServices, the writes hmls makes to them
(finalizers, the status), their revisions and their Events.

``Hub`` is the real one, over the hub's ``ClusterClient`` and ``HubCache``; the reconciler
reaches it through ``hmls.engine.reconciler.HubAPI``, so its phases can be tested with a fake
hub as they are with fake spokes.  Every write's answer goes into the cache at once (the watch
echo of it is then known), so the next reconcile reads what was written.
"""

from __future__ import annotations

from hmls.domain.models import FIELD_MANAGER
from hmls.domain.status import Status, status_patch
from hmls.engine.hubcache import HubCache
from hmls.engine.rollouts import Revisions
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.events import EventRecorder
from hmls.kube.resources import HMLS
from hmls.metrics import Metrics


class Hub:
    def __init__(self, client: ClusterClient, cache: HubCache, metrics: Metrics) -> None:
        self.client = client
        self.cache = cache
        self.metrics = metrics
        self.events = EventRecorder(client)
        self.revisions = Revisions(client)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get(namespace, name)

    async def set_finalizers(self, obj: Obj, finalizers: list[str]) -> Obj | None:
        """The updated object, or None if it is gone already."""
        meta = obj["metadata"]
        patch = {"metadata": {"finalizers": finalizers,
                              "resourceVersion": meta["resourceVersion"]}}
        try:
            updated = await self.client.patch(HMLS, meta["namespace"], meta["name"], patch,
                                              field_manager=FIELD_MANAGER)
        except errors.NotFound:
            return None
        self.cache.observe(updated)
        return updated

    async def write_status(self, obj: Obj, status: Status) -> Obj | None:
        """Store exactly ``status``: a merge patch of every difference from the status
        ``obj`` holds, at any depth, conditional on its resourceVersion (a status changed
        since is a ``Conflict``, and the reconcile is retried).  Nothing is sent when they are
        equal.  The updated object, or None when nothing was written (or it is gone)."""
        patch = status_patch(obj.get("status") or {}, status.to_wire())
        if patch is None:
            return None
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}
        try:
            updated = await self.client.patch(HMLS, meta["namespace"], meta["name"], body,
                                              subresource="status", field_manager=FIELD_MANAGER)
        except errors.NotFound:
            return None
        self.metrics.status_writes.inc()
        self.cache.observe(updated)
        return updated

    async def emit(self, obj: Obj, *, type_: str, reason: str, message: str) -> None:
        await self.events.emit(obj, type_=type_, reason=reason, message=message)

    def forget(self, uid: str) -> None:
        """The HyperMLService is gone: its Event deduplication memory goes too."""
        self.events.forget(uid)
