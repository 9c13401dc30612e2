"""The routing table (hmls.engine.routing): which events enqueue which keys, and when."""

from __future__ import annotations

import asyncio
import random

from hmls.engine.hubcache import Cached, HubCache
from hmls.engine.queue import WorkQueue
from hmls.engine.routing import (
    ROUTES,
    ClusterEvent,
    HubEvent,
    OwnerEvent,
    Router,
    Source,
    Tick,
    World,
)
from hmls.kube.client import Obj
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer

WINDOW = 0.05


def raw(rv: str, uid: str = "u1", name: str = "svc") -> Obj:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv}}


def cr(rv: str, uid: str = "u1", name: str = "svc") -> Cached:
    return Cached.of(raw(rv, uid, name))


class Setup:
    """A hub cache, the work queue and the router between them."""

    def __init__(self, *objs: Obj, resync: float = 600, draw: random.Random | None = None
                 ) -> None:
        self.informer: Informer[Cached] = Informer(
            None, HMLS, on_event=lambda *_: None, transform=Cached.of)  # type: ignore[arg-type]
        self.cache = HubCache({"": self.informer})
        for obj in objs:
            self.add(obj)
        self.queue = WorkQueue()
        self.router = Router(self.queue, World(self.cache, WINDOW, resync,
                                               *([draw.uniform] if draw else [])))

    def add(self, obj: Obj) -> Cached:
        self.informer.observe(obj)
        cached = Cached.of(obj)
        self.cache.index(cached)
        return cached

    def emit(self, source: Source, event: HubEvent | ClusterEvent | OwnerEvent | Tick) -> None:
        self.router.emit(source, event)


def test_every_source_has_a_route() -> None:
    assert set(ROUTES) == set(Source)


def test_watch_echo_of_our_own_write_does_not_enqueue() -> None:
    s = Setup()
    s.emit(Source.HUB_OBJECT, HubEvent("MODIFIED", cr("7"), cr("7")))
    assert len(s.queue) == 0


def test_any_new_version_enqueues_once() -> None:
    s = Setup()
    s.emit(Source.HUB_OBJECT, HubEvent("ADDED", None, cr("5")))
    s.emit(Source.HUB_OBJECT, HubEvent("MODIFIED", cr("5"), cr("6")))
    assert len(s.queue) == 1


def test_a_deletion_is_not_enqueued() -> None:
    s = Setup()
    s.emit(Source.HUB_OBJECT, HubEvent("DELETED", cr("5"), None))
    assert len(s.queue) == 0


async def settled() -> Setup:
    """A setup whose one CR (ns/svc, uid u1) has been reconciled: its queue is empty."""
    s = Setup(raw("5"))
    s.emit(Source.HUB_OBJECT, HubEvent("ADDED", None, cr("5")))
    assert await s.queue.get() == "ns/svc"
    s.queue.done("ns/svc")
    return s


async def test_spoke_events_within_the_batch_window_make_one_reconcile() -> None:
    s = await settled()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(8):  # eight spokes reporting at once
        s.emit(Source.SPOKE_OBJECT, OwnerEvent("u1", urgent=False))
        await asyncio.sleep(WINDOW / 20)
    assert len(s.queue) == 0  # held for the window
    assert await asyncio.wait_for(s.queue.get(), 1.0) == "ns/svc"
    assert loop.time() - start >= WINDOW * 0.9
    await asyncio.sleep(WINDOW * 2)
    assert len(s.queue) == 0  # the eight events became one key


def test_event_for_an_unknown_owner_is_dropped() -> None:
    s = Setup()
    s.emit(Source.SPOKE_OBJECT, OwnerEvent("nobody", urgent=True))
    assert len(s.queue) == 0


async def test_resync_schedules_every_cr_once_within_the_period() -> None:
    s = Setup(*(raw("5", uid=f"u{i}", name=f"svc{i}") for i in range(20)), resync=0.2,
              draw=random.Random(7))
    s.emit(Source.RESYNC, Tick())
    assert len(s.queue) == 0  # spread over the period, not a burst
    await asyncio.sleep(0.1)
    assert 0 < len(s.queue) < 20
    await asyncio.sleep(0.15)
    assert len(s.queue) == 20  # each key once


async def test_drift_or_deletion_on_a_spoke_is_reconciled_at_once() -> None:
    s = await settled()
    s.emit(Source.SPOKE_OBJECT, OwnerEvent("u1", urgent=True))
    assert len(s.queue) == 1  # no batch window


async def test_a_cluster_change_enqueues_only_the_crs_it_may_concern() -> None:
    specs = {"names-it": {"workloads": [{"clusters": ["spoke2"]}]},
             "elsewhere": {"workloads": [{"clusters": ["spoke1"]}]},
             "selects": {"workloads": [{"clusterSelector": {}}]}}
    s = Setup(*({**raw("5", uid=name, name=name), "spec": spec} for name, spec in specs.items()),
              {**raw("5", uid="was-there", name="was-there"), "spec": specs["elsewhere"],
               "status": {"aggregatedStatus": [{"cluster": "spoke2"}]}})
    for source in (Source.REGISTRATION, Source.PROFILE, Source.REACHABILITY, Source.RECOVERED):
        s.emit(source, ClusterEvent("spoke2"))
    keys = []
    while len(s.queue):
        keys.append(await s.queue.get())
        s.queue.done(keys[-1])
    assert sorted(keys) == ["ns/names-it", "ns/selects", "ns/was-there"]
