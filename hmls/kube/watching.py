"""Informer: a resilient list+watch of one resource on one cluster, with a local store.

It lists, then watches from the list's resourceVersion with bookmarks; a dropped watch
resumes from the last seen resourceVersion; ``410 Gone`` (compaction) triggers a fresh
list whose differences against the store are delivered as events, so no change is lost
while disconnected.  Connection failures are retried with capped exponential backoff and
reported through ``on_status`` (the cluster registry uses that for reachability).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj, Resource

log = logging.getLogger("hmls.watch")

EventHandler = Callable[[str, Obj | None, Obj | None], None]
"""(event type, old object or None, new object or None); called in the event loop."""


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def _newer(a: Obj, b: Obj) -> bool:
    """resourceVersions are opaque, but etcd's are integers; fall back to 'different'."""
    ra, rb = a["metadata"].get("resourceVersion", ""), b["metadata"].get("resourceVersion", "")
    if str(ra).isdigit() and str(rb).isdigit():
        return int(ra) > int(rb)
    return bool(ra != rb)


class Informer:
    def __init__(self, client: ClusterClient, resource: Resource, *, on_event: EventHandler,
                 namespace: str | None = None, label_selector: str | None = None,
                 transform: Callable[[Obj], Obj] | None = None,
                 on_restart: Callable[[str], None] | None = None,
                 watch_timeout: int = 300) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.store: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()
        self.attempted = asyncio.Event()
        """Set once the first list has succeeded or failed."""
        self.last_error: str | None = None
        self.last_exception: errors.KubeError | None = None
        self._on_event = on_event
        self._transform = transform or (lambda o: o)
        self._on_restart = on_restart or (lambda reason: None)
        self._watch_timeout = watch_timeout
        self._rv = ""

    def get(self, namespace: str | None, name: str) -> Obj | None:
        return self.store.get((namespace or "", name))

    def observe(self, obj: Obj) -> None:
        """Record a response we just got from a write, unless the watch already has newer."""
        new = self._transform(obj)
        key = _key(new)
        prev = self.store.get(key)
        if prev is None or _newer(new, prev):
            self.store[key] = new

    def _emit(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        try:
            self._on_event(kind, old, new)
        except Exception:  # a handler bug must not kill the watch
            log.exception("event handler failed for %s on %s", self.resource.kind, self.client.name)

    async def _relist(self) -> None:
        items, rv = await self.client.list(self.resource, namespace=self.namespace,
                                           label_selector=self.label_selector)
        fresh = {_key(o): self._transform(o) for o in items}
        old_store, self.store = self.store, fresh
        for key, obj in fresh.items():
            prev = old_store.get(key)
            if prev is None:
                self._emit("ADDED", None, obj)
            elif prev["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", prev, obj)
        for key, prev in old_store.items():
            if key not in fresh:
                self._emit("DELETED", prev, None)
        self._rv = rv
        self.last_error = None
        self.synced.set()
        self.attempted.set()

    async def _watch(self) -> None:
        async for ev in self.client.watch(
                self.resource, resource_version=self._rv, namespace=self.namespace,
                label_selector=self.label_selector, timeout_seconds=self._watch_timeout):
            rv = ev.object.get("metadata", {}).get("resourceVersion")
            if ev.type == "BOOKMARK":
                self._rv = rv or self._rv
                continue
            obj = self._transform(ev.object)
            key = _key(obj)
            prev = self.store.get(key)
            if ev.type == "DELETED":
                self.store.pop(key, None)
                self._emit("DELETED", prev, None)
            else:
                self.store[key] = obj
                self._emit(ev.type, prev, obj)
            self._rv = rv or self._rv

    async def run(self) -> None:
        """List and watch until cancelled."""
        delay = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._watch()
                delay = 0.2  # a watch that ended normally (timeout) just resumes
            except errors.Gone:
                log.info("watch of %s on %s expired (410); re-listing",
                         self.resource.kind, self.client.name)
                self._on_restart("expired")
                need_list = True
            except errors.KubeError as exc:
                self.last_error, self.last_exception = exc.message, exc
                self.attempted.set()
                self._on_restart("error")
                log.info("watch of %s on %s failed: %s; retrying in %.1fs",
                         self.resource.kind, self.client.name, exc.message, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
                need_list = need_list or not self._rv
