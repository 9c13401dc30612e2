"""ClusterRegistry: one ClusterClient per cluster Secret on the hub.

Secrets labelled ``hmls.tensorstack.dev/cluster: <name>`` carry a kubeconfig under data key
``kubeconfig``.  Each is vetted (``hmls.domain.kubeconfig``) before anything from it is used;
a client is built per Secret content (keyed by a hash), replaced when the content changes
and closed when the Secret goes.  A probe loop tracks reachability.  Changes are reported
through ``on_change(cluster)`` so the engine can requeue what uses that cluster.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hmls.domain.access import AccessPolicy
from hmls.domain.kubeconfig import KubeconfigPolicy, KubeconfigRefused, vet
from hmls.domain.models import CLUSTER_LABEL
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.metrics import Metrics

log = logging.getLogger("hmls.registry")


@dataclass
class Cluster:
    name: str
    secret: str
    fingerprint: str
    client: ClusterClient | None
    error: str | None = None
    """Why the Secret cannot be used (kubeconfig refused...); client is then None."""
    reachable: bool | None = None
    last_error: str = ""
    version: str = ""
    generation: int = 0
    """Bumped each time the client is replaced, so watchers know to restart."""
    access: AccessPolicy = field(default_factory=AccessPolicy)


class ClusterRegistry:
    def __init__(self, *, namespace: str, metrics: Metrics, on_change: Callable[[str], None],
                 policy: KubeconfigPolicy | None = None, request_timeout: float = 10.0) -> None:
        self.namespace = namespace
        self._metrics = metrics
        self._on_change = on_change
        self._policy = policy or KubeconfigPolicy()
        self._timeout = request_timeout
        self._clusters: dict[str, Cluster] = {}
        self._secret_to_cluster: dict[str, str] = {}
        self._events: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        self._generation = 0

    def get(self, name: str) -> Cluster | None:
        return self._clusters.get(name)

    def all(self) -> list[Cluster]:
        return list(self._clusters.values())

    def not_registered(self, name: str) -> str:
        return (f"cluster {name} is not registered (no Secret labelled "
                f"{CLUSTER_LABEL}={name} in namespace {self.namespace} on the hub)")

    # ----- Secret events (called from the hub Secret informer) ----------------------
    def on_secret_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        self._events.put_nowait((kind, new or old or {}))

    async def _handle(self, kind: str, secret: Obj) -> None:
        meta = secret.get("metadata") or {}
        sname = meta.get("name", "")
        previous_name = self._secret_to_cluster.get(sname)
        name = (meta.get("labels") or {}).get(CLUSTER_LABEL, "")
        if kind == "DELETED" or not name:
            if previous_name:
                await self._drop(previous_name, sname)
            return
        if previous_name and previous_name != name:
            await self._drop(previous_name, sname)
        other = self._clusters.get(name)
        if other and other.secret != sname:
            log.warning("Secrets %s and %s both register cluster %s; keeping %s",
                        other.secret, sname, name, other.secret)
            return
        raw_b64 = (secret.get("data") or {}).get("kubeconfig", "")
        fingerprint = hashlib.sha256(raw_b64.encode()).hexdigest()
        access = AccessPolicy.from_annotations(meta.get("annotations"))
        if other and other.fingerprint == fingerprint:
            if other.access != access:
                other.access = access
                self._on_change(name)
            return
        self._secret_to_cluster[sname] = name
        cluster = await self._build(name, sname, raw_b64, fingerprint)
        cluster.access = access
        self._clusters[name] = cluster
        if other and other.client:
            await other.client.close()
        log.info("cluster %s %s from Secret %s/%s%s", name, "updated" if other else "registered",
                 self.namespace, sname, f": {cluster.error}" if cluster.error else "")
        self._export()
        self._on_change(name)
        if cluster.client:
            await self._probe(cluster)

    async def _build(self, name: str, sname: str, raw_b64: str, fingerprint: str) -> Cluster:
        self._generation += 1
        try:
            if not raw_b64:
                raise KubeconfigRefused("Secret has no data key 'kubeconfig'")
            try:
                raw = base64.b64decode(raw_b64, validate=True)
            except (binascii.Error, ValueError):
                raise KubeconfigRefused("data.kubeconfig is not valid base64") from None
            cfg = vet(raw, self._policy)
            client = await ClusterClient.from_kubeconfig(name, cfg, timeout=self._timeout)
        except KubeconfigRefused as exc:
            return Cluster(name, sname, fingerprint, None, error=str(exc),
                           generation=self._generation)
        except errors.KubeError as exc:
            return Cluster(name, sname, fingerprint, None, error=exc.message,
                           generation=self._generation)
        return Cluster(name, sname, fingerprint, client, generation=self._generation)

    async def _drop(self, name: str, sname: str) -> None:
        self._secret_to_cluster.pop(sname, None)
        cluster = self._clusters.get(name)
        if cluster is None or cluster.secret != sname:
            return
        del self._clusters[name]
        if cluster.reachable is not None:
            self._metrics.cluster_reachable.remove(name)
        if cluster.client:
            await cluster.client.close()
        log.info("cluster %s unregistered (Secret %s/%s deleted)", name, self.namespace, sname)
        self._export()
        self._on_change(name)

    def _export(self) -> None:
        refused = sum(1 for c in self._clusters.values() if c.client is None)
        self._metrics.clusters.labels("ready").set(len(self._clusters) - refused)
        self._metrics.clusters.labels("refused").set(refused)

    # ----- reachability ------------------------------------------------------------
    def report(self, name: str, *, reachable: bool, error: str = "") -> None:
        """Record what a call into the cluster just learned."""
        cluster = self._clusters.get(name)
        if cluster is None:
            return
        changed = cluster.reachable is not reachable
        cluster.reachable = reachable
        cluster.last_error = error if not reachable else ""
        self._metrics.cluster_reachable.labels(name).set(1 if reachable else 0)
        if changed and cluster.reachable is not None:
            log.info("cluster %s is now %s%s", name, "reachable" if reachable else "unreachable",
                     f": {error}" if error else "")
            self._on_change(name)

    async def _probe(self, cluster: Cluster) -> None:
        if cluster.client is None:
            return
        try:
            version = await cluster.client.version()
        except errors.KubeError as exc:
            if self._clusters.get(cluster.name) is cluster:
                self.report(cluster.name, reachable=False, error=exc.message)
            return
        cluster.version = str(version.get("gitVersion", ""))
        if self._clusters.get(cluster.name) is cluster:
            self.report(cluster.name, reachable=True)

    async def run(self, *, probe_interval: float) -> None:
        """Apply Secret events in order and probe every cluster periodically."""
        async def probes() -> None:
            while True:
                await asyncio.sleep(probe_interval)
                await asyncio.gather(*(self._probe(c) for c in list(self._clusters.values())))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(probes())
            while True:
                kind, secret = await self._events.get()
                try:
                    await self._handle(kind, secret)
                except Exception:  # one bad Secret must not stop the registry
                    log.exception("handling a cluster Secret failed")
                finally:
                    self._events.task_done()

    async def drained(self) -> None:
        """Wait until every Secret event received so far has been handled."""
        await self._events.join()

    async def close(self) -> None:
        for cluster in self._clusters.values():
            if cluster.client:
                await cluster.client.close()
        self._clusters.clear()
