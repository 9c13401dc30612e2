"""Kubernetes Events on hub objects (``kubectl describe hmls`` shows them).

Emitting is best effort: a failure to record an Event is logged and never fails a reconcile.
Identical events for one object within ``dedupe_seconds`` are sent once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

from hmls.domain.models import timestamp
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import EVENTS

log = logging.getLogger("hmls.events")


class EventRecorder:
    def __init__(self, client: ClusterClient, *, component: str = "hmls-controller",
                 dedupe_seconds: float = 600.0) -> None:
        self._client = client
        self._component = component
        self._dedupe = dedupe_seconds
        self._recent: dict[tuple[str, str, str], float] = {}

    def forget(self, uid: str) -> None:
        """An object is gone: its deduplication entries go with it."""
        self._recent = {k: t for k, t in self._recent.items() if k[0] != uid}

    async def emit(self, obj: Obj, *, type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        key = (meta.get("uid", ""), reason, message)
        now = time.monotonic()
        if now - self._recent.get(key, -1e9) < self._dedupe:
            return
        self._recent = {k: t for k, t in self._recent.items() if now - t < self._dedupe}
        self._recent[key] = now
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
