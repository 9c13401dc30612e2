"""Informer: a resilient list+watch of one resource on one cluster, with a local store.

It lists, then watches from the list's resourceVersion with bookmarks; a dropped watch
resumes from the last seen resourceVersion; ``410 Gone`` (compaction) triggers a fresh
list whose differences against the store are delivered as events, so no change is lost
while disconnected.  Failures are retried with capped exponential backoff; whatever a
server sends (a 5xx, a body that is not JSON, an event without metadata) is one failed
attempt of this informer, counted through ``on_restart``, never an exception that leaves
``run``.  The store keeps ``transform(object)`` (by default the object itself), so a cache
holds only what its reader needs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import Resource

log = logging.getLogger("hmls.watch")

T = TypeVar("T")
EventHandler = Callable[[str, T | None, T | None], None]
"""(event type, old stored value or None, new stored value or None); called in the loop."""


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def _rv(obj: Obj) -> str:
    return str(obj["metadata"].get("resourceVersion") or "")


def _newer(a: str, b: str) -> bool:
    """resourceVersions are opaque, but etcd's are integers; fall back to 'different'."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True if it was set.  Not ``asyncio.wait_for``: on
    Python 3.11 a cancel that lands as the event's waiter completes is swallowed (wait_for
    returns instead of raising), so a loop around it would outlive its cancel: an informer
    its cluster, a probe loop the shutdown."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False


class Informer(Generic[T]):
    def __init__(self, client: ClusterClient, resource: Resource, *,
                 on_event: EventHandler[T], transform: Callable[[Obj], T] | None = None,
                 namespace: str | None = None, label_selector: str | None = None,
                 on_restart: Callable[[str, errors.KubeError], None] | None = None,
                 on_recovered: Callable[[], None] | None = None,
                 watch_timeout: int = 300) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.store: dict[tuple[str, str], T] = {}
        self._versions: dict[tuple[str, str], str] = {}
        self.synced = asyncio.Event()
        self.attempted = asyncio.Event()
        """Set once the first list has succeeded or failed."""
        self._retry = asyncio.Event()  # set by ``retry_now``: ends the backoff in progress
        self.last_exception: errors.KubeError | None = None
        self._on_event = on_event
        self._transform: Callable[[Obj], T] = transform or (lambda o: cast(T, o))
        self._on_restart = on_restart or (lambda reason, failure: None)
        self._on_recovered = on_recovered or (lambda: None)
        """Called when the first list succeeds after failed attempts (until then ``synced``
        is clear and users of the cache refuse work): what was refused can be done now, and a
        missing object brings no event of its own."""
        self._watch_timeout = watch_timeout
        self._rv = ""

    def retry_now(self) -> None:
        """Cut short the wait before the next attempt (its cluster answers again)."""
        self._retry.set()

    def get(self, namespace: str | None, name: str) -> T | None:
        return self.store.get((namespace or "", name))

    def observe(self, obj: Obj) -> T:
        """Record a response we just got from a write, unless the watch already has newer;
        returns the stored value.  An object whose deletion is final (a deletionTimestamp and
        no finalizers left: the server removes it now) is not recorded, or a response that
        arrives after the watch's DELETED event would bring it back for good."""
        key, rv = _key(obj), _rv(obj)
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._transform(obj)
        prev = self._versions.get(key)
        if prev is None or _newer(rv, prev):
            self.store[key], self._versions[key] = self._transform(obj), rv
        return self.store[key]

    def _emit(self, kind: str, old: T | None, new: T | None) -> None:
        try:
            self._on_event(kind, old, new)
        except Exception:  # a handler bug must not kill the watch
            log.exception("event handler failed for %s on %s", self.resource.kind, self.client.name)

    async def _relist(self) -> None:
        fresh: dict[tuple[str, str], tuple[T, str]] = {}
        rv = ""
        # page by page: parsed whole, 10,000 of the scale bench's HyperMLServices are 140 MB
        # of objects, and a spoke's 10,000 MLServices 84 MB, for each cluster at a restart
        async for page, page_rv in self.client.pages(self.resource, namespace=self.namespace,
                                                     label_selector=self.label_selector):
            fresh.update((_key(o), (self._transform(o), _rv(o))) for o in page)
            rv = page_rv
        old_store, old_versions = self.store, self._versions
        self.store = {k: v for k, (v, _) in fresh.items()}
        self._versions = {k: r for k, (_, r) in fresh.items()}
        for key, (value, version) in fresh.items():
            if key not in old_store:
                self._emit("ADDED", None, value)
            elif old_versions.get(key) != version:
                self._emit("MODIFIED", old_store[key], value)
        for key, prev in old_store.items():
            if key not in fresh:
                self._emit("DELETED", prev, None)
        self._rv = rv
        recovered = not self.synced.is_set() and self.last_exception is not None
        self.last_exception = None
        self.synced.set()
        self.attempted.set()
        if recovered:
            self._on_recovered()

    async def _watch(self) -> None:
        async for ev in self.client.watch(
                self.resource, resource_version=self._rv, namespace=self.namespace,
                label_selector=self.label_selector, timeout_seconds=self._watch_timeout):
            rv = _rv(ev.object)
            if ev.type != "BOOKMARK":
                key = _key(ev.object)
                prev = self.store.get(key)
                if ev.type == "DELETED":
                    self.store.pop(key, None)
                    self._versions.pop(key, None)
                    self._emit("DELETED", prev, None)
                else:
                    # the echo of our own write (``observe``) is stored already: not
                    # transformed again (for the hub cache: encoded and deflated again)
                    value = (prev if prev is not None and self._versions.get(key) == rv
                             else self._transform(ev.object))
                    self.store[key], self._versions[key] = value, rv
                    self._emit(ev.type, prev, value)
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
            except errors.Gone as exc:
                log.info("watch of %s on %s expired (410); re-listing",
                         self.resource.kind, self.client.name)
                self._on_restart("expired", exc)
                need_list = True
            except Exception as exc:  # any failure is one failed attempt
                failure = _as_kube_error(exc)
                self.last_exception = failure
                self.attempted.set()
                self._on_restart("error", failure)
                log.info("watch of %s on %s failed: %s; retrying in %.1fs",
                         self.resource.kind, self.client.name, failure.message, delay)
                self._retry.clear()
                await wait_event(self._retry, delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
                need_list = need_list or not self._rv or isinstance(failure, errors.Malformed)


def _as_kube_error(exc: Exception) -> errors.KubeError:
    if isinstance(exc, errors.KubeError):
        return exc
    log.error("unexpected %s in an informer", type(exc).__name__, exc_info=exc)
    return errors.KubeError(f"unexpected {type(exc).__name__}: {exc}")

