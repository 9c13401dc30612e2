"""The hub's HyperMLServices as the controller sees them: one informer per watched namespace
(or one for all), looked up by namespace/name or by uid.

Each CR is kept as a ``Cached``: the few fields event routing reads, decoded once, and the
whole (lean) object as compact JSON, deflated, decoded for the reconcile that needs it.  At 16
clusters a CR's status lists 48 items, each with its object's status.  As decoded dicts the
CRs were half of what the controller held beyond its imports (40 of 81 traced MB at 1,000 CRs x
4 clusters); compact JSON is about a fifth of the dicts, and deflating takes it to a fifth
again (such a CR: 6.5 KB of JSON, 1.3 KB deflated)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from hmls.domain.models import follows_labels, named_clusters
from hmls.domain.status import Status
from hmls.kube.client import Obj
from hmls.kube.watching import Informer

UNREAD_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def lean(obj: Obj) -> Obj:
    """A HyperMLService without ``metadata.managedFields`` and kubectl's last-applied copy of
    the object, which hmls never reads and which are each about as large as the spec.  Every
    hub write hmls makes is a patch, so nothing is ever sent back from this copy."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    trimmed = {k: v for k, v in meta.items() if k != "managedFields"}
    if isinstance(annotations, dict) and UNREAD_ANNOTATIONS & annotations.keys():
        trimmed["annotations"] = {k: v for k, v in annotations.items()
                                  if k not in UNREAD_ANNOTATIONS}
    return {**obj, "metadata": trimmed}


@dataclass(frozen=True, slots=True)
class Cached:
    """One HyperMLService in the hub cache."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    deleting: bool
    follows_labels: bool
    """Its rendering depends on cluster labels: any cluster change may concern it."""
    clusters: frozenset[str]
    """Every cluster its spec names or its status involves."""
    body_z: bytes
    """The lean object (``lean``): compact JSON, deflated."""

    @classmethod
    def of(cls, obj: Obj) -> Cached:
        meta = obj["metadata"]
        spec = obj.get("spec")
        return cls(namespace=str(meta.get("namespace") or ""), name=str(meta["name"]),
                   uid=str(meta.get("uid") or ""),
                   resource_version=str(meta.get("resourceVersion") or ""),
                   deleting=bool(meta.get("deletionTimestamp")),
                   follows_labels=follows_labels(spec),
                   clusters=frozenset(named_clusters(spec) | Status.clusters_of(obj)),
                   body_z=zlib.compress(json.dumps(lean(obj), separators=(",", ":")).encode(),
                                        level=1))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def body(self) -> Obj:
        """A fresh decoded copy: the caller may change it."""
        body: Obj = json.loads(zlib.decompress(self.body_z))
        return body


class HubCache:
    def __init__(self, informers: dict[str, Informer[Cached]]) -> None:
        """informers: namespace -> informer (``transform=Cached.of``); the key "" means all
        namespaces."""
        self.informers = informers
        self._by_uid: dict[str, str] = {}

    def _for(self, namespace: str) -> Informer[Cached] | None:
        return self.informers.get(namespace) or self.informers.get("")

    def get(self, namespace: str, name: str) -> Obj | None:
        inf = self._for(namespace)
        cached = inf.get(namespace, name) if inf else None
        return cached.body() if cached else None

    def observe(self, obj: Obj) -> None:
        inf = self._for(obj["metadata"]["namespace"])
        if inf:
            inf.observe(obj)

    def index(self, cached: Cached, *, deleted: bool = False) -> None:
        if deleted:
            self._by_uid.pop(cached.uid, None)
        else:
            self._by_uid[cached.uid] = cached.key

    def key_for_uid(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def objects(self) -> Iterator[Cached]:
        for inf in self.informers.values():
            yield from list(inf.store.values())

    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers.values())
