"""Composition root: builds every part and runs every long-lived task in one TaskGroup.

Flow: a hub HyperMLService event, a cluster Secret change or a spoke object event only
enqueues ``namespace/name`` keys, through the one routing table (``hmls.engine.routing``);
``workers`` reconcile keys level-triggered.  SIGTERM or SIGINT cancels the group: workers stop
between API calls, clients are closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import uuid
from collections.abc import Callable

from hmls.domain.models import CLUSTER_LABEL
from hmls.engine.analysis import Prometheus
from hmls.engine.hub import Hub
from hmls.engine.hubcache import Cached, HubCache
from hmls.engine.queue import WorkQueue
from hmls.engine.reconciler import Reconciler
from hmls.engine.routing import HubEvent, Router, Source, Tick, World
from hmls.engine.spokes import Fleet, SpokeConfig
from hmls.kube import errors
from hmls.kube.client import USER_AGENT, ClusterClient, Obj
from hmls.kube.leader import Election, LostLeadership
from hmls.kube.resources import CLUSTER_PROFILES, HMLS, SECRETS
from hmls.kube.watching import Informer
from hmls.metrics import Metrics, serve
from hmls.settings import Settings

log = logging.getLogger("hmls.manager")


class Manager:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.queue = WorkQueue(on_depth=self.metrics.queue_depth.set, accept=self._owns)
        self.hub_cache = HubCache({})
        self.router = Router(self.queue, World(self.hub_cache, settings.batch_window,
                                               settings.resync_period))
        self.election: Election | None = None
        self.fleet: Fleet | None = None
        self._started = False

    # ----- event routing -----------------------------------------------------------
    def _owns(self, key: str) -> bool:
        return self.election is None or self.election.owns(key)

    def _acquired(self, shard: int) -> None:
        """A shard taken over while running: its keys are this replica's to reconcile now
        (the queue keeps only those)."""
        held = self.election.held if self.election else []
        self.metrics.leader.set(1 if held else 0)
        self.metrics.shards_held.set(len(held))
        self.router.emit(Source.SHARD, Tick())

    def _cr_event(self, kind: str, old: Cached | None, new: Cached | None) -> None:
        """A hub watch event: the cache's uid index follows it, then it is routed."""
        cached = new or old
        if cached is not None:
            self.hub_cache.index(cached, deleted=kind == "DELETED")
        self.router.emit(Source.HUB_OBJECT, HubEvent(kind, old, new))

    async def _resyncs(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_period)
            self.router.emit(Source.RESYNC, Tick())

    def _hub_restart(self, resource: str) -> Callable[[str, errors.KubeError], None]:
        def restarted(reason: str, failure: errors.KubeError) -> None:
            self.metrics.watch_restarts.labels("hub", resource, reason).inc()
        return restarted

    def ready(self) -> tuple[bool, str]:
        if self.election is not None and not self.election.held and not self._started:
            return True, "standby: waiting for a Lease"
        if not self._started:
            return False, "starting"
        if not self.hub_cache.synced():
            return False, "hub caches not synced"
        return True, "ok"

    # ----- workers -----------------------------------------------------------------
    async def _worker(self, reconciler: Reconciler) -> None:
        while True:
            key = await self.queue.get()
            started = time.perf_counter()
            result = "error"
            outcome = None
            try:
                outcome = await reconciler.reconcile(key)
                result = "success" if outcome.converged else "requeue"
            except errors.Conflict as exc:
                result = "conflict"
                log.info("%s: conflict, retrying: %s", key, exc.message)
            except errors.KubeError as exc:
                log.warning("%s: reconcile failed: %s", key, exc.message)
            except Exception:
                log.exception("%s: reconcile crashed", key)
            finally:
                self.queue.done(key)
                self.metrics.reconcile_duration.observe(time.perf_counter() - started)
                self.metrics.reconcile_total.labels(result).inc()
            delay = self.queue.requeue(key, converged=result == "success",
                                       after=outcome.requeue_after if outcome else None)
            if delay is not None:
                log.debug("%s: %s, requeued in %.1fs", key, result, delay)

    async def _profiles(self, hub: ClusterClient, fleet: Fleet) -> Informer[Obj] | None:
        """An informer on the hub's ClusterProfiles, if the hub serves them (checked once, at
        start: a ClusterProfile API installed later is read after a restart)."""
        try:
            await hub.resource(CLUSTER_PROFILES.api_version, CLUSTER_PROFILES.kind)
        except errors.UnknownKind:
            log.info("the hub serves no ClusterProfile API: clusters come from Secrets only")
            return None
        log.info("reading cluster names, labels and health from ClusterProfiles")
        return Informer(hub, CLUSTER_PROFILES, on_event=fleet.on_profile_event,
                        on_restart=self._hub_restart(CLUSTER_PROFILES.plural))

    # ----- run ---------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        hub = await ClusterClient.for_hub(s.kubeconfig, context=s.context, timeout=s.request_timeout,
                                          user_agent=f"{USER_AGENT} ({identity})")
        runner = await serve(self.metrics, host=s.metrics_host, port=s.metrics_port,
                             ready=self.ready)
        if s.leader_elect or s.shards > 1:
            self.election = Election(
                hub, namespace=s.leader_election_namespace or s.namespace,
                identity=identity, shards=s.shards,
                lease_seconds=s.lease_seconds, renew_deadline=s.renew_deadline,
                retry_seconds=s.retry_seconds, on_acquired=self._acquired)
        prometheus = Prometheus(s.prometheus, self.metrics) if s.prometheus else None
        try:
            self.metrics.shards.set(s.shards)
            if self.election:
                self.metrics.leader.set(0)
                await self.election.acquire()
            self.metrics.leader.set(1)
            self.metrics.shards_held.set(len(self.election.held) if self.election else 1)
            async with asyncio.TaskGroup() as tg:
                if self.election:
                    tg.create_task(self.election.hold())
                fleet = Fleet(namespace=s.namespace, hub=hub, metrics=self.metrics,
                              config=SpokeConfig(
                                  probe_interval=s.probe_interval,
                                  probe_timeout=min(s.probe_timeout, s.request_timeout),
                                  failure_threshold=s.probe_failure_threshold,
                                  per_cluster_concurrency=s.per_cluster_concurrency,
                                  cluster_qps=s.cluster_qps, cluster_burst=s.cluster_burst,
                                  request_timeout=s.request_timeout),
                              emit=self.router.emit,
                              kubeconfig_policy=s.kubeconfig_policy,
                              records_health=lambda: self.election is None
                              or self.election.holds(0))
                self.fleet = fleet
                secrets: Informer[Obj] = Informer(
                    hub, SECRETS, namespace=s.namespace, label_selector=CLUSTER_LABEL,
                    on_event=fleet.registry.on_secret_event,
                    on_restart=self._hub_restart("secrets"))
                namespaces = s.watch_namespaces or ("",)
                self.hub_cache.informers = {
                    ns: Informer(hub, HMLS, namespace=ns or None, on_event=self._cr_event,
                                 transform=Cached.of, on_restart=self._hub_restart(HMLS.plural))
                    for ns in namespaces}
                reconciler = Reconciler(hub=Hub(hub, self.hub_cache, self.metrics), fleet=fleet,
                                        metrics=self.metrics, prometheus=prometheus)
                tg.create_task(fleet.run())
                tg.create_task(secrets.run())
                profiles = await self._profiles(hub, fleet)
                if profiles is not None:
                    tg.create_task(profiles.run())
                    await profiles.synced.wait()
                await secrets.synced.wait()
                await fleet.drained()
                for inf in self.hub_cache.informers.values():
                    tg.create_task(inf.run())
                for inf in self.hub_cache.informers.values():
                    await inf.synced.wait()
                for _ in range(s.workers):
                    tg.create_task(self._worker(reconciler))
                if s.resync_period > 0:
                    tg.create_task(self._resyncs())
                self._started = True
                log.info("hmls controller started: %d clusters, %d HyperMLServices, "
                         "%d workers", len(fleet.names()),
                         sum(1 for _ in self.hub_cache.objects()), s.workers)
        finally:
            self.queue.shutdown()
            self.metrics.leader.set(0)
            self.metrics.shards_held.set(0)
            if self.election:
                await self.election.release()
            if self.fleet is not None:
                await self.fleet.close()
            if prometheus is not None:
                await prometheus.close()
            await hub.close()
            await runner.cleanup()


async def run_until_signalled(settings: Settings) -> None:
    manager = Manager(settings)
    task = asyncio.create_task(manager.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("hmls controller stopped")
    except ExceptionGroup as group:
        lost = group.subgroup(LostLeadership)
        if lost is None:
            raise
        log.error("stopping: %s", lost.exceptions[0])
        raise SystemExit(1) from None
