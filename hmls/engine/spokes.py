"""Spoke: one object per registered cluster, owning everything that talks to that cluster.

A ``Spoke`` holds the cluster's client, its informers (label-selected on the owner-uid label,
started the first time a reconcile needs a kind), the owner index built from them, the
limit on parallel writes, the access policy, the namespace cache, and the health probe that
is the only writer of the cluster's reachability.  Everything it runs lives in its own task
group, each task supervised (an unexpected exception is logged, counted and the task
restarted with backoff), so nothing one spoke sends can stop the controller or another
spoke.  The ``Fleet`` starts a Spoke when a registration appears, replaces it when the
Secret's kubeconfig changes (the old one is stopped and its client closed: no informer is
left retrying on a closed session) and stops it when the Secret goes.

The reconciler sees spokes through the small ``SpokeAPI`` protocol of
``hmls.engine.reconciler``; what changes is reported through ``emit`` (the routing table of
``hmls.engine.routing``): a watched object's owner (urgent unless only the object's status
changed: drift and deletions are acted on at once, status changes are gathered for the batch
window), a cache that listed after failing, a registration or ClusterProfile that changed, a
reachability verdict that flipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hmls.domain.access import AccessPolicy, grant_hint, tenant_grant, tenant_of
from hmls.domain.drift import Ownership
from hmls.domain.health import Health, health, spec_subset
from hmls.domain.kubeconfig import KubeconfigPolicy
from hmls.domain.models import (
    FIELD_MANAGER,
    HASH_ANNOTATION,
    OWNER_NAME,
    OWNER_NAMESPACE,
    OWNER_UID,
    Owner,
    timestamp,
)
from hmls.domain.reachability import Reachability
from hmls.domain.render import Fleet as FleetLabels
from hmls.domain.status import UNREACHABLE
from hmls.engine.routing import ClusterEvent, Emit, OwnerEvent, Source
from hmls.kube import errors
from hmls.kube.budget import Budget
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.registry import ClusterRegistry, Profile, Registration, fleet_labels, profile
from hmls.kube.resources import NAMESPACES, ROLE_BINDINGS, SERVICE_ACCOUNTS, Resource
from hmls.kube.watching import Informer, wait_event
from hmls.metrics import Metrics

log = logging.getLogger("hmls.spokes")

CREATED_BY_LABEL = "app.kubernetes.io/created-by"
CREATED_BY = "hmls-controller"
CREATED_FOR_ANNOTATION = "hmls.tensorstack.dev/created-for"
"""On a namespace hmls created: the HyperMLService that first needed it."""
CONFIRM_GAP = 0.2
"""Seconds between a failed probe and the one that confirms (or clears) it."""


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _interned(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Observed:
    """A spoke object as the caches keep it: identity, the owner labels, the applied hash,
    field ownership (for drift), status and the few spec fields readiness reads.  Never a
    Secret's data, never a whole spec.  The status is kept as compact JSON (a fifth of the
    decoded dicts' memory) and decoded when read; the strings many objects repeat (the
    namespace, the owner's labels, a manifest's name and hash on every cluster) are
    interned, so a fleet holds each once."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    owner_namespace: str | None
    owner_name: str | None
    owner_uid: str | None
    applied_hash: str | None
    ownership: Ownership
    status_json: str | None
    spec: dict[str, Any] | None
    deleting: bool

    @classmethod
    def of(cls, raw: Obj, resource: Resource) -> Observed:
        """Tolerant of whatever a server sends: a malformed field is dropped, never raised."""
        meta = _dict(raw.get("metadata"))
        labels = _str_map(meta.get("labels"))
        status = raw.get("status") if resource.kind != "Secret" else None
        generation = meta.get("generation")
        return cls(
            api_version=resource.api_version, kind=resource.kind,
            namespace=sys.intern(str(meta.get("namespace") or "")),
            name=sys.intern(str(meta.get("name") or "")), uid=str(meta.get("uid") or ""),
            generation=generation if isinstance(generation, int) else 0,
            owner_namespace=_interned(labels.get(OWNER_NAMESPACE)),
            owner_name=_interned(labels.get(OWNER_NAME)),
            owner_uid=_interned(labels.get(OWNER_UID)),
            applied_hash=_interned(_str_map(meta.get("annotations")).get(HASH_ANNOTATION)),
            ownership=Ownership.of(meta.get("managedFields"), FIELD_MANAGER),
            status_json=json.dumps(status, separators=(",", ":"))
            if isinstance(status, dict) else None,
            spec=spec_subset(resource.api_version, resource.kind, _dict(raw.get("spec"))),
            deleting=bool(meta.get("deletionTimestamp")))

    @property
    def status(self) -> dict[str, Any] | None:
        return json.loads(self.status_json) if self.status_json is not None else None

    def owner_key(self) -> str:
        return f"{self.owner_namespace}/{self.owner_name}"

    def health(self, status: dict[str, Any] | None) -> Health | None:
        """The readiness verdict on ``status`` (this object's, decoded once by the caller)."""
        meta: dict[str, Any] = {"generation": self.generation}
        if self.deleting:
            meta["deletionTimestamp"] = "set"
        return health({"apiVersion": self.api_version, "kind": self.kind, "metadata": meta,
                       "spec": self.spec, "status": status})


@dataclass(frozen=True, slots=True)
class NamespaceView:
    name: str
    terminating: bool
    created_by_hmls: bool

    @classmethod
    def of(cls, raw: Obj) -> NamespaceView:
        meta = _dict(raw.get("metadata"))
        return cls(str(meta.get("name") or ""),
                   _dict(raw.get("status")).get("phase") == "Terminating"
                   or bool(meta.get("deletionTimestamp")),
                   _str_map(meta.get("labels")).get(CREATED_BY_LABEL) == CREATED_BY)


@dataclass(frozen=True)
class SpokeConfig:
    probe_interval: float = 10.0
    probe_timeout: float = 5.0
    failure_threshold: int = 3
    """Consecutive failed probes before a reachable cluster is declared unreachable."""
    per_cluster_concurrency: int = 8
    cluster_qps: float = 50.0
    cluster_burst: int = 100
    request_timeout: float = 10.0
    sync_timeout: float = 10.0
    """How long a reconcile waits for a new informer's first list."""


Ref = tuple[Resource, str, str]
"""(resource, namespace, name) of an object on a spoke."""


@dataclass
class _Watched:
    informer: Informer[Observed]
    index: dict[str, tuple[Ref, ...]] = field(default_factory=dict)
    """owner uid -> what this kind holds of it (a tuple: nearly always one)"""


class Spoke:
    """One registered cluster; see the module docstring."""

    def __init__(self, registration: Registration, client: ClusterClient | None, *,
                 error: str | None, config: SpokeConfig, metrics: Metrics,
                 emit: Emit, on_health: Callable[[Spoke, bool], Awaitable[None]],
                 reachability: Reachability | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.name = registration.name
        self.registration = registration
        self.access: AccessPolicy = registration.access
        self.client = client
        self.error = error
        """Why the registration cannot be used (kubeconfig refused or unloadable)."""
        self.reachability = reachability or Reachability()
        self._config = config
        self._metrics = metrics
        self._emit = emit
        self._on_health = on_health
        self._now = now
        self._sem = asyncio.Semaphore(config.per_cluster_concurrency)
        self._watched: dict[Resource, _Watched] = {}
        self._asked: set[tuple[str, str]] = set()
        """(apiVersion, kind) whose watch ``owned`` started."""
        self._namespaces: Informer[NamespaceView] | None = None
        self._kick = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.started = asyncio.Event()

    # ----- lifetime ------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: the probe and every informer, each supervised."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.client is not None:
                    tg.create_task(self._supervise("probe", self._probe_loop))
                self.started.set()
                await asyncio.Event().wait()  # until stopped
        finally:
            self._tg = None
            if self.client is not None:
                await self.client.close()
            with contextlib.suppress(KeyError):  # exported once probed
                self._metrics.cluster_reachable.remove(self.name)

    def _spawn(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        assert self._tg is not None, "spoke not running"
        self._tg.create_task(self._supervise(what, run))

    async def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = 1.0
        while True:
            try:
                await run()
                return
            except Exception:
                log.exception("cluster %s: %s failed; restarting in %.0fs", self.name, what, delay)
                self._metrics.spoke_task_restarts.labels(self.name, what).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    # ----- health --------------------------------------------------------------------
    def unusable(self) -> tuple[str, str] | None:
        """Why nothing can be done on this cluster now, as (reason, message): its
        registration cannot be used (``ClusterUnusable``: a person fixes it) or it is
        unreachable (``Unreachable``: it may come back); None when it can be used."""
        if self.client is None:
            return "ClusterUnusable", f"cluster {self.name} cannot be used: {self.error}"
        if self.reachability.reachable is False:
            return UNREACHABLE, (f"cluster {self.name} is unreachable: "
                                 f"{self.reachability.last_error}")
        return None

    @property
    def reachable(self) -> bool | None:
        return self.reachability.reachable

    @property
    def server(self) -> str:
        """The API server's URL ("" when the registration cannot be used)."""
        return self.client.server if self.client else ""

    def kick(self) -> None:
        """A request just failed in transport: probe now instead of at the next interval."""
        self._kick.set()

    async def probe(self) -> None:
        assert self.client is not None
        now = timestamp(self._now())
        before = self.reachability
        try:
            await self.client.readyz(timeout=self._config.probe_timeout)
            version = before.version
            if before.reachable is not True:  # first answer, or back after an outage
                version = str((await self.client.version()).get("gitVersion") or "")
            after = before.after_probe(ok=True, now=now, version=version)
        except errors.KubeError as exc:
            reason = exc.message if isinstance(exc, errors.Unreachable) else (
                f"API server not ready: {exc.message}")
            after = before.after_probe(ok=False, now=now, error=reason,
                                       threshold=self._config.failure_threshold)
        self.reachability = after
        self._metrics.cluster_reachable.labels(self.name).set(1 if after.reachable else 0)
        flipped = after.reachable is not before.reachable
        if flipped and after.reachable is False:
            # what is in flight there (applies, deletes, discovery, watches) would hang until
            # its timeout, and so would what is asked next, holding workers that other
            # clusters' HyperMLServices need: cut off until a probe gets an answer again
            await self.client.sever(f"cluster {self.name} is unreachable: {after.last_error}")
        elif after.reachable:
            self.client.restore()
            if flipped:  # back: the informers' next attempt now, not after their backoff
                for informer in self._informers():
                    informer.retry_now()
        if flipped:
            log.info("cluster %s is now %s%s", self.name,
                     "reachable" if after.reachable else "unreachable",
                     f": {after.last_error}" if after.last_error else "")
        await self._on_health(self, flipped)

    async def _probe_loop(self) -> None:
        gap = min(1.0, self._config.probe_interval)
        while True:
            self._kick.clear()
            await self.probe()
            if self.reachability.reachable and self.reachability.failures:
                # a failure not confirmed yet: the next probe at once, so that a cluster that
                # went away is known after threshold probe timeouts, not threshold intervals
                await asyncio.sleep(CONFIRM_GAP)
                continue
            await asyncio.sleep(gap)  # kicks from a burst of failures cost one probe
            await wait_event(self._kick, self._config.probe_interval - gap)

    # ----- informers -----------------------------------------------------------------
    def _informers(self) -> list[Informer[Any]]:
        watched: list[Informer[Any]] = [w.informer for w in self._watched.values()]
        return watched + ([self._namespaces] if self._namespaces else [])

    def _restarted(self, resource: Resource) -> Callable[[str, errors.KubeError], None]:
        def restarted(reason: str, failure: errors.KubeError) -> None:
            self._metrics.watch_restarts.labels(self.name, resource.plural, reason).inc()
            if isinstance(failure, errors.Unreachable):
                self.kick()
        return restarted

    def _on_event(self, resource: Resource) -> Callable[[str, Observed | None, Observed | None], None]:
        def handler(kind: str, old: Observed | None, new: Observed | None) -> None:
            watched = self._watched[resource]
            for obj, add in ((old, False), (new, True)):
                uid = obj.owner_uid if obj else None
                if obj is None or not uid:
                    continue
                ref = (resource, obj.namespace, obj.name)
                refs = watched.index.get(uid, ())
                if add and ref not in refs:
                    watched.index[uid] = (*refs, ref)
                elif not add and ref in refs:
                    if len(refs) > 1:
                        watched.index[uid] = tuple(r for r in refs if r != ref)
                    else:
                        del watched.index[uid]
            if old != new:
                urgent = old is None or new is None or replace(old, status_json=new.status_json) != new
                for uid in {o.owner_uid for o in (old, new) if o and o.owner_uid}:
                    self._emit(Source.SPOKE_OBJECT, OwnerEvent(uid, urgent))
        return handler

    def _recovered(self) -> None:
        """A cache that could not list has listed: the reconciles it refused go again."""
        self._emit(Source.RECOVERED, ClusterEvent(self.name))

    async def _synced(self, informer: Informer[Any]) -> None:
        if informer.synced.is_set():
            return
        if not await wait_event(informer.attempted, self._config.sync_timeout):
            raise errors.Unreachable(f"could not list {informer.resource.plural} on cluster "
                                     f"{self.name} within {self._config.sync_timeout:.0f}s")
        if not informer.synced.is_set():
            failure = informer.last_exception or errors.KubeError("list failed")
            raise type(failure)(f"could not list {informer.resource.plural} on cluster "
                                f"{self.name}: {failure.message}", status=failure.status)

    async def _informer(self, resource: Resource) -> Informer[Observed]:
        assert self.client is not None
        watched = self._watched.get(resource)
        if watched is None:
            inf: Informer[Observed] = Informer(
                self.client, resource, on_event=self._on_event(resource), label_selector=OWNER_UID,
                transform=lambda raw: Observed.of(raw, resource),
                on_restart=self._restarted(resource),
                on_recovered=self._recovered)
            watched = self._watched[resource] = _Watched(inf)
            self._spawn(f"watch {resource.plural}", inf.run)
        await self._synced(watched.informer)
        return watched.informer

    # ----- what the reconciler uses ------------------------------------------------------
    async def resource(self, api_version: str, kind: str) -> Resource:
        assert self.client is not None
        return await self.client.resource(api_version, kind)

    async def watch(self, resources: Iterable[Resource]) -> None:
        """Start the informers of these kinds together, so that a cold cluster lists them side
        by side instead of one per dependency group; a kind that cannot be listed is
        reported by ``cached`` for its items."""
        await asyncio.gather(*(self._informer(r) for r in resources), return_exceptions=True)

    async def cached(self, resource: Resource, namespace: str | None, name: str) -> Observed | None:
        """The watched copy of an object hmls labels as owned (None: absent or not ours)."""
        return (await self._informer(resource)).get(namespace, name)

    async def apply(self, body: Obj, resource: Resource, *, force: bool,
                    as_user: str | None = None) -> Observed:
        """Server-side apply, as ``as_user`` (impersonated) when given."""
        assert self.client is not None
        try:
            async with self._sem:
                applied = await self.client.apply(body, field_manager=FIELD_MANAGER,
                                                  resource=resource, force=force,
                                                  impersonate=as_user)
        except errors.Unreachable:
            self.kick()
            raise
        except errors.Forbidden as exc:
            namespace = _dict(body.get("metadata")).get("namespace")
            raise await self._refused_tenant(exc, namespace, as_user) from None
        watched = self._watched.get(resource)
        return watched.informer.observe(applied) if watched else Observed.of(applied, resource)

    def owned(self, uid: str, kinds: Iterable[tuple[str, str]] = ()) -> list[Ref]:
        """What the watched kinds hold with this owner uid.  Each of ``kinds`` (apiVersion,
        kind) is watched from now on, so what hmls applied before a restart is found even
        where nothing else uses its kind: the watch starts in the background (a slow cluster
        delays no caller) and what it lists enqueues its owner."""
        for api_version, kind in set(kinds) - self._asked:
            self._asked.add((api_version, kind))
            self._spawn(f"watch {kind}", functools.partial(self._watch_kind, api_version, kind))
        refs = [r for w in self._watched.values() for r in w.index.get(uid, ())]
        return sorted(refs, key=lambda r: (r[0].kind, r[1], r[2]))

    async def _watch_kind(self, api_version: str, kind: str) -> None:
        try:
            await self._informer(await self.resource(api_version, kind))
        except errors.UnknownKind:
            pass  # not served here: nothing of it can exist
        except errors.KubeError:
            self._asked.discard((api_version, kind))  # asked again by the next caller

    async def delete(self, resource: Resource, namespace: str | None, name: str, *,
                     owner_uid: str, as_user: str | None = None) -> bool:
        """Delete the object (as ``as_user`` when given) if a fresh read shows it carries
        this owner uid; False if it is gone or not ours (then it is never touched). The delete
        is conditional on the read's uid and resourceVersion, so an object another owner took
        over in between answers Conflict instead of being deleted."""
        assert self.client is not None
        try:
            live = await self.client.get(resource, namespace, name)
            if live is None or _str_map(_dict(live.get("metadata")).get("labels")).get(
                    OWNER_UID) != owner_uid:
                return False
            meta = _dict(live.get("metadata"))
            async with self._sem:
                return await self.client.delete(resource, namespace, name, uid=meta.get("uid"),
                                                resource_version=meta.get("resourceVersion"),
                                                impersonate=as_user)
        except errors.Unreachable:
            self.kick()
            raise

    # ----- namespaces ----------------------------------------------------------------
    async def _namespace_informer(self) -> Informer[NamespaceView]:
        assert self.client is not None
        if self._namespaces is None:
            inf: Informer[NamespaceView] = Informer(
                self.client, NAMESPACES, on_event=lambda *_: None, transform=NamespaceView.of,
                on_restart=self._restarted(NAMESPACES), on_recovered=self._recovered)
            self._namespaces = inf
            self._spawn("watch namespaces", inf.run)
        await self._synced(self._namespaces)
        return self._namespaces

    async def namespace(self, name: str) -> NamespaceView | None:
        return (await self._namespace_informer()).get(None, name)

    async def ensure_namespace(self, name: str, owner: Owner) -> bool:
        """Create the namespace if it is missing; True if this call created it."""
        assert self.client is not None
        inf = await self._namespace_informer()
        found = inf.get(None, name)
        if found is not None:
            if found.terminating:
                raise errors.Conflict(f"namespace {name} is being deleted on cluster {self.name}")
            return False
        level = self.access.pod_security
        body: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {CREATED_BY_LABEL: CREATED_BY,
                                     "pod-security.kubernetes.io/enforce": level,
                                     "pod-security.kubernetes.io/warn": level},
            "annotations": {CREATED_FOR_ANNOTATION: owner.key}}}
        try:
            async with self._sem:
                created = await self.client.create(NAMESPACES, None, body,
                                                   field_manager=FIELD_MANAGER)
                if self.access.tenant:
                    await self._grant_tenant(name)
        except errors.Conflict:
            return False  # created meanwhile by someone else
        except errors.Unreachable:
            self.kick()
            raise
        inf.observe(created)
        log.info("cluster %s: created namespace %s for %s", self.name, name, owner.key)
        return True

    async def _refused_tenant(self, exc: errors.Forbidden, namespace: str | None,
                              as_user: str | None) -> errors.Forbidden:
        """A tenant's write refused in a namespace hmls did not make: the refusal, saying what
        the spoke's owner runs to grant it."""
        tenant = tenant_of(as_user) if as_user else None
        if tenant is None or not namespace or exc.status != 403:
            return exc
        found = await self.namespace(namespace)
        if found is None or found.created_by_hmls:
            return exc
        return errors.Forbidden(f"{exc.message}; {grant_hint(self.name, namespace, tenant)}",
                                status=exc.status)

    async def _grant_tenant(self, namespace: str) -> None:
        """In a namespace hmls created: the tenant ServiceAccount, bound to the tenant
        ClusterRole that ``hmls cluster join`` installed."""
        assert self.client is not None
        for res, body in zip((SERVICE_ACCOUNTS, ROLE_BINDINGS),
                             tenant_grant(namespace, {CREATED_BY_LABEL: CREATED_BY}), strict=True):
            with contextlib.suppress(errors.Conflict):
                await self.client.create(res, namespace, body, field_manager=FIELD_MANAGER)


class Fleet:
    """Every registered cluster's Spoke, started, replaced and stopped by registry events."""

    def __init__(self, *, namespace: str, hub: ClusterClient | None, config: SpokeConfig,
                 metrics: Metrics, emit: Emit,
                 kubeconfig_policy: KubeconfigPolicy | None = None,
                 records_health: Callable[[], bool] = lambda: True) -> None:
        self._config = config
        self._metrics = metrics
        self._emit = emit
        self.registry = ClusterRegistry(namespace=namespace, hub=hub,
                                        on_registered=self._registered,
                                        on_removed=self._removed, policy=kubeconfig_policy,
                                        records=records_health)
        self._spokes: dict[str, tuple[Spoke, asyncio.Task[None]]] = {}
        self._profiles: dict[str, dict[str, Profile]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()

    def get(self, name: str) -> Spoke | None:
        entry = self._spokes.get(name)
        return entry[0] if entry else None

    def all(self) -> list[Spoke]:
        return [s for s, _ in self._spokes.values()]

    def names(self) -> list[str]:
        return sorted(self._spokes)

    def not_registered(self, name: str) -> str:
        found = self._profile(name)
        if found is not None:
            return (f"cluster {name} has a ClusterProfile ({found.namespace}/{name}) but no "
                    f"credentials: {self.registry.not_registered(name)}")
        return self.registry.not_registered(name)

    def reachability(self) -> Mapping[str, bool | None]:
        return {name: s.reachable for name, (s, _) in self._spokes.items()}

    def labels(self) -> FleetLabels:
        """Every known cluster's labels: a ClusterProfile's, overlaid by its registration
        Secret's (the Secret, which hmls's operators write, wins)."""
        return fleet_labels((p for same_name in self._profiles.values()
                             for p in same_name.values()),
                            {name: s.registration.labels for name, (s, _) in self._spokes.items()})

    # ----- ClusterProfiles (called from the hub ClusterProfile informer) ----------------
    def on_profile_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        found = profile(new or old or {})
        if not found.name:
            return
        same_name = self._profiles.setdefault(found.name, {})
        if kind == "DELETED":
            same_name.pop(found.namespace, None)
            if not same_name:
                del self._profiles[found.name]
        else:
            same_name[found.namespace] = found
        self._emit(Source.PROFILE, ClusterEvent(found.name))

    def _profile(self, name: str) -> Profile | None:
        """The cluster's ClusterProfile (of the first namespace, by name, that has one)."""
        same_name = self._profiles.get(name)
        return same_name[min(same_name)] if same_name else None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await self.registry.load_recorded()
            self._running.set()
            tg.create_task(self.registry.run())

    async def drained(self) -> None:
        await self._running.wait()
        await self.registry.drained()

    async def _registered(self, reg: Registration) -> None:
        current = self.get(reg.name)
        if current is not None and current.registration.fingerprint == reg.fingerprint:
            current.registration, current.access = reg, reg.access  # labels, annotations
            self._emit(Source.REGISTRATION, ClusterEvent(reg.name))
            return
        await self._stop(reg.name)
        client, error = None, reg.error
        if reg.kubeconfig is not None:
            try:
                client = await ClusterClient.from_kubeconfig(
                    reg.name, reg.kubeconfig, timeout=self._config.request_timeout)
                client.budget = Budget(self._config.cluster_qps, self._config.cluster_burst)
                client.on_throttle = self._metrics.cluster_throttled.labels(reg.name).inc
            except errors.KubeError as exc:
                error = exc.message
        spoke = Spoke(reg, client, error=error, config=self._config, metrics=self._metrics,
                      emit=self._emit, on_health=self._health,
                      reachability=Reachability.from_record(self.registry.recorded(reg.name)))
        if client is None:  # never probed: its verdict is the refusal
            await self.registry.record(reg.name, Reachability(
                reachable=False, last_error=f"cannot be used: {error}").record())
        assert self._tg is not None
        task = self._tg.create_task(spoke.run())
        await spoke.started.wait()
        self._spokes[reg.name] = (spoke, task)
        self._export()
        self._emit(Source.REGISTRATION, ClusterEvent(reg.name))

    async def _removed(self, name: str) -> None:
        await self._stop(name)
        await self.registry.record(name, None)
        self._export()
        self._emit(Source.REGISTRATION, ClusterEvent(name))

    async def _stop(self, name: str) -> None:
        entry = self._spokes.pop(name, None)
        if entry is None:
            return
        entry[1].cancel()
        await asyncio.wait([entry[1]])

    async def _health(self, spoke: Spoke, flipped: bool) -> None:
        if self.get(spoke.name) is not spoke:
            return  # replaced meanwhile
        await self.registry.record(spoke.name, spoke.reachability.record())
        if flipped:
            self._emit(Source.REACHABILITY, ClusterEvent(spoke.name))

    def _export(self) -> None:
        refused = sum(1 for s in self.all() if s.client is None)
        self._metrics.clusters.labels("ready").set(len(self._spokes) - refused)
        self._metrics.clusters.labels("refused").set(refused)

    async def close(self) -> None:
        for name in list(self._spokes):
            await self._stop(name)
