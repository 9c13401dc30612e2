"""Unit tests for the Manager's event routing: which events enqueue a key, and when."""

from __future__ import annotations

import asyncio
import random

from hmls.engine.hubcache import Cached, HubCache
from hmls.engine.manager import Manager
from hmls.kube.client import Obj
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer
from hmls.metrics import Metrics
from hmls.settings import Settings

WINDOW = 0.05


def raw(rv: str, uid: str = "u1", name: str = "svc") -> Obj:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv}}


def cr(rv: str, uid: str = "u1", name: str = "svc") -> Cached:
    return Cached.of(raw(rv, uid, name))


def manager() -> Manager:
    return Manager(Settings(batch_window=WINDOW), metrics=Metrics())


def test_watch_echo_of_our_own_write_does_not_enqueue() -> None:
    m = manager()
    m._cr_event("MODIFIED", cr("7"), cr("7"))
    assert len(m.queue) == 0


def test_any_new_version_enqueues_once() -> None:
    m = manager()
    m._cr_event("ADDED", None, cr("5"))
    m._cr_event("MODIFIED", cr("5"), cr("6"))
    assert len(m.queue) == 1


def test_deletion_is_indexed_but_not_enqueued() -> None:
    m = manager()
    m._cr_event("ADDED", None, cr("5"))
    m._cr_event("DELETED", cr("5"), None)
    assert m.hub_cache.key_for_uid("u1") is None
    assert len(m.queue) == 1  # only the ADDED


async def settled() -> Manager:
    """A manager whose one CR (ns/svc, uid u1) has been reconciled: its queue is empty."""
    m = manager()
    m._cr_event("ADDED", None, cr("5"))
    assert await m.queue.get() == "ns/svc"
    m.queue.done("ns/svc")
    return m


async def test_spoke_events_within_the_batch_window_make_one_reconcile() -> None:
    m = await settled()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(8):  # eight spokes reporting at once
        m._owner_changed("u1")
        await asyncio.sleep(WINDOW / 20)
    assert len(m.queue) == 0  # held for the window
    assert await asyncio.wait_for(m.queue.get(), 1.0) == "ns/svc"
    assert loop.time() - start >= WINDOW * 0.9
    await asyncio.sleep(WINDOW * 2)
    assert len(m.queue) == 0  # the eight events became one key


def test_event_for_an_unknown_owner_is_dropped() -> None:
    m = manager()
    m._owner_changed("nobody")
    assert len(m.queue) == 0 and not m.queue._timers


async def test_resync_schedules_every_cr_once_within_the_period() -> None:
    m = Manager(Settings(resync_period=0.2), metrics=Metrics())
    cache: Informer[Cached] = Informer(None, HMLS, on_event=lambda *_: None,  # type: ignore[arg-type]
                                       transform=Cached.of)
    for i in range(20):
        cache.observe(raw("5", uid=f"u{i}", name=f"svc{i}"))
    m.hub_cache = HubCache({"": cache})
    m.resync(random.Random(7))
    assert len(m.queue) == 0  # spread over the period, not a burst
    await asyncio.sleep(0.1)
    assert 0 < len(m.queue) < 20
    await asyncio.sleep(0.15)
    assert len(m.queue) == 20  # each key once


async def test_drift_or_deletion_on_a_spoke_is_reconciled_at_once() -> None:
    m = await settled()
    m._owner_changed("u1", urgent=True)
    assert len(m.queue) == 1  # no batch window


def test_a_cluster_change_enqueues_only_the_crs_it_may_concern() -> None:
    m = manager()
    cache: Informer[Cached] = Informer(None, HMLS, on_event=lambda *_: None,  # type: ignore[arg-type]
                                       transform=Cached.of)
    specs = {"names-it": {"workloads": [{"clusters": ["spoke2"]}]},
             "elsewhere": {"workloads": [{"clusters": ["spoke1"]}]},
             "selects": {"workloads": [{"clusterSelector": {}}]}}
    for name, spec in specs.items():
        cache.observe({**raw("5", uid=name, name=name), "spec": spec})
    cache.observe({**raw("5", uid="was-there", name="was-there"),
                   "spec": specs["elsewhere"], "status": {"aggregatedStatus": [{"cluster": "spoke2"}]}})
    m.hub_cache = HubCache({"": cache})
    m._cluster_changed("spoke2")
    assert sorted(m.queue._queued) == ["ns/names-it", "ns/selects", "ns/was-there"]
