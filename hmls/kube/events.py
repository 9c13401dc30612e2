"""Kubernetes Events on hub objects (``kubectl describe hmls`` shows them).

Emitting is best effort: a failure to record an Event is logged and never fails a reconcile.
Identical events for one object within ``dedupe_seconds`` are sent once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

from hmls.domain.models import timestamp
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import EVENTS

log = logging.getLogger("hmls.events")


class EventRecorder:
    def __init__(self, client: ClusterClient, *, component: str = "hmls-controller",
                 dedupe_seconds: float = 600.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._client = client
        self._component = component
        self._dedupe = dedupe_seconds
        self._clock = clock
        self._recent: dict[str, dict[tuple[str, str], float]] = {}
        """object uid -> (reason, message) -> when it was last sent"""
        self._pruned = clock()

    def forget(self, uid: str) -> None:
        """An object is gone: its deduplication entries go with it."""
        self._recent.pop(uid, None)

    def _prune(self, now: float) -> None:
        """Drop what has aged out, once per dedupe period (pruning on every event made a burst
        of events across a fleet quadratic)."""
        self._pruned = now
        self._recent = {uid: kept for uid, sent in self._recent.items()
                        if (kept := {k: t for k, t in sent.items() if now - t < self._dedupe})}

    async def emit(self, obj: Obj, *, type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        uid, key = str(meta.get("uid", "")), (reason, message)
        now = self._clock()
        if now - self._recent.get(uid, {}).get(key, -1e9) < self._dedupe:
            return
        if now - self._pruned >= self._dedupe:
            self._prune(now)
        self._recent.setdefault(uid, {})[key] = now
        stamp = timestamp(dt.datetime.now(dt.UTC))
        event: Obj = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                         "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
            },
            "reason": reason, "message": message[:1024], "type": type_,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            await self._client.create(EVENTS, meta["namespace"], event)
        except errors.KubeError as exc:
            log.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"],
                        meta["name"], exc.message)
