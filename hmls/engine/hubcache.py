"""The hub's HyperMLServices as the controller sees them: one informer per watched namespace
(or one for all), looked up by namespace/name or by uid."""

from __future__ import annotations

from collections.abc import Iterator

from hmls.kube.client import Obj
from hmls.kube.watching import Informer

UNREAD_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def lean(obj: Obj) -> Obj:
    """A HyperMLService as the cache keeps it: without ``metadata.managedFields`` and
    kubectl's last-applied copy of the object, which hmls never reads and which are each
    about as large as the spec.  Every hub write hmls makes is a patch, so nothing is ever
    sent back from this copy."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    trimmed = {k: v for k, v in meta.items() if k != "managedFields"}
    if isinstance(annotations, dict) and UNREAD_ANNOTATIONS & annotations.keys():
        trimmed["annotations"] = {k: v for k, v in annotations.items()
                                  if k not in UNREAD_ANNOTATIONS}
    return {**obj, "metadata": trimmed}


class HubCache:
    def __init__(self, informers: dict[str, Informer[Obj]]) -> None:
        """informers: namespace -> informer; the key "" means all namespaces."""
        self.informers = informers
        self._by_uid: dict[str, str] = {}

    def _for(self, namespace: str) -> Informer[Obj] | None:
        return self.informers.get(namespace) or self.informers.get("")

    def get(self, namespace: str, name: str) -> Obj | None:
        inf = self._for(namespace)
        return inf.get(namespace, name) if inf else None

    def observe(self, obj: Obj) -> None:
        inf = self._for(obj["metadata"]["namespace"])
        if inf:
            inf.observe(obj)

    def index(self, obj: Obj, *, deleted: bool = False) -> None:
        meta = obj["metadata"]
        if deleted:
            self._by_uid.pop(meta.get("uid", ""), None)
        else:
            self._by_uid[meta["uid"]] = f"{meta['namespace']}/{meta['name']}"

    def key_for_uid(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def objects(self) -> Iterator[Obj]:
        for inf in self.informers.values():
            yield from list(inf.store.values())

    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers.values())
