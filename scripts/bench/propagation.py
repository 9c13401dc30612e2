"""Status propagation, with a flip (``flip_ready``: an MLService's Ready condition
set on a spoke through the status subresource, as its controller would).

  one spoke    flip one spoke's MLService to Ready=False; the clock stops when a hub watch
               shows the HyperMLService Ready=False; the simulator then restores it (0.5 s)
               and we wait for Ready=True before the next run.  Lower bound from the floors:
               the controller's batch window (its default, ``Settings.batch_window``) +
               2·watch (the flip seen by the controller, its status patch seen by us); the
               issue's target for p99: window + 3·watch + status patch.
  all spokes   flip every spoke's MLService at once (then the simulator restores them all):
               how many hub status writes the controller makes for that storm, read from its
               ``hmls_status_writes_total`` before and after (ideal: 2, one for "all not
               ready", one for "all ready again"; one per spoke event would be 2 x spokes).
  drift        a merge patch of the MLService's ``spec.default`` on a spoke (field manager
               bench-drift, as kubectl patch does); the clock stops when a watch on that spoke
               shows the value hmls applied again.  Lower bound: 2·watch + apply (a drifted
               object is reconciled at once, without the batch window).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

from common import NAMESPACE, Bench, HubWatch, cond, hyper, log, mlservice, summary
from floors import p50_s
from hmls_devenv.harness import Controller
from hmls_devenv.simulator import MLSERVICE

from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer
from hmls.settings import Settings

NAME = "prop"
MLSVC = "torch-mnist-s3"  # the object flip_ready flips


async def flip_ready(spoke: ClusterClient, value: str) -> None:
    """Set the MLService's Ready condition on a spoke, as its controller would (the
    simulator restores it)."""
    live = await spoke.get(MLSERVICE, NAMESPACE, MLSVC)
    assert live is not None
    status = copy.deepcopy(live["status"])
    for c in status["conditions"]:
        if c["type"] == "Ready":
            c["status"] = value
    await spoke.patch(MLSERVICE, NAMESPACE, MLSVC, {"status": status}, subresource="status",
                      field_manager="bench")


def _not_ready(obj: dict[str, Any]) -> int:
    return sum(1 for i in (obj.get("status") or {}).get("aggregatedStatus") or []
               if i.get("resource", {}).get("kind") == "MLService" and i.get("ready") is False)


async def run(b: Bench, ctl: Controller, floors: dict[str, Any]) -> dict[str, Any]:
    runs = 10 if b.quick else 50
    rounds = 2 if b.quick else 10
    spokes = b.spokes
    await b.namespace(NAMESPACE, ["hub", *spokes])
    watcher = await HubWatch(b.hub, NAMESPACE).start()

    def mine(o: dict[str, Any]) -> bool:
        return bool(o["metadata"]["name"] == NAME)

    def is_ready(o: dict[str, Any]) -> bool:
        return mine(o) and cond(o, "Ready") == "True" and _not_ready(o) == 0

    rd = watcher.when(is_ready)
    await b.hub.create(HMLS, NAMESPACE, hyper(NAME, NAMESPACE, spokes, [mlservice(MLSVC, NAMESPACE)]))
    await asyncio.wait_for(rd, 60)
    await ctl.settle(quiet=1.0)

    one, c0 = [], await ctl.counters()
    for i in range(runs):
        notready = watcher.when(lambda o: mine(o) and cond(o, "Ready") == "False")
        t0 = time.perf_counter()
        await flip_ready(b.clients[spokes[i % len(spokes)]], "False")
        one.append(await asyncio.wait_for(notready, 30) - t0)
        await watcher.until(is_ready, 1, 30)  # the simulator restores it
    c1 = await ctl.settle(quiet=1.0)
    single_writes = c1["status_writes"] - c0["status_writes"]
    reconcile_ms = 1000 * (c1["reconcile_s"] - c0["reconcile_s"]) / max(
        c1["reconciles"] - c0["reconciles"], 1)

    storm_writes, all_seen, all_back = [], [], []
    for _ in range(rounds):
        before = (await ctl.settle(quiet=1.0))["status_writes"]
        seen = watcher.when(lambda o: mine(o) and _not_ready(o) == len(spokes))
        t0 = time.perf_counter()
        await asyncio.gather(*(flip_ready(b.clients[s], "False") for s in spokes))
        # not seen if the simulator restored some before the hub showed all of them at once
        with contextlib.suppress(TimeoutError):
            all_seen.append(await asyncio.wait_for(seen, 5) - t0)
        now = watcher.get(NAME)
        if now is None or not is_ready(now):
            await watcher.until(is_ready, 1, 30)
        all_back.append(time.perf_counter() - t0)
        storm_writes.append((await ctl.settle(quiet=1.0))["status_writes"] - before)
    drift = await _drift(b, runs)
    await watcher.stop()
    window_ms = Settings().batch_window * 1000
    watch_ms = p50_s(floors, "watch_delivery") * 1000
    lb = window_ms + 2 * watch_ms
    target = window_ms + 3 * watch_ms + p50_s(floors, "status_patch") * 1000
    result: dict[str, Any] = {
        "runs": runs, "spoke_status_to_hub": summary(one), "batch_window_ms": window_ms,
        "lower_bound_ms": lb, "p99_target_ms": target,
        "status_writes_per_single_flip": single_writes / runs,
        "reconcile_mean_ms": reconcile_ms,
        "storm": {"spokes": len(spokes), "rounds": rounds, "status_writes": storm_writes,
                  "status_writes_mean": sum(storm_writes) / rounds,
                  "ideal_writes": 2, "naive_writes": 2 * len(spokes),
                  "all_not_ready_seen": summary(all_seen) if all_seen else None,
                  "rounds_all_not_ready_seen": len(all_seen),
                  "flip_to_all_ready_again": summary(all_back)},
        "drift_restored": summary(drift),
        "drift_lower_bound_ms": 2 * watch_ms + p50_s(floors, "apply") * 1000}
    s = result["spoke_status_to_hub"]
    log(f"propagation: p50 {s['p50_ms']:.0f} ms p99 {s['p99_ms']:.0f} ms | lower bound "
        f"{lb:.0f} ms (x{s['p50_ms'] / lb:.1f}) | p99 target {target:.0f} ms "
        f"(x{s['p99_ms'] / target:.2f}) | {single_writes / runs:.1f} status writes per flip, "
        f"reconcile {reconcile_ms:.1f} ms")
    d = result["drift_restored"]
    log(f"drift: spoke patch -> restored p50 {d['p50_ms']:.0f} ms p99 {d['p99_ms']:.0f} ms "
        f"(lower bound {result['drift_lower_bound_ms']:.0f} ms)")
    log(f"storm of {len(spokes)} flips: status writes per round {storm_writes} "
        f"(ideal 2, one per event {2 * len(spokes)})")
    return result


async def _drift(b: Bench, runs: int) -> list[float]:
    """Patch spec.default behind hmls's back on each spoke in turn; time until it is back."""
    restored: dict[str, asyncio.Future[float]] = {}

    def watcher(spoke: str) -> Informer[Obj]:
        def on_event(kind: str, old: Obj | None, new: Obj | None) -> None:
            fut = restored.get(spoke)
            if new and new["metadata"]["name"] == MLSVC and fut and not fut.done() \
                    and (new.get("spec") or {}).get("default") == "origin":
                fut.set_result(time.perf_counter())
        return Informer(b.clients[spoke], MLSERVICE, namespace=NAMESPACE, on_event=on_event)

    informers = [watcher(s) for s in b.spokes]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    for i in informers:
        await i.synced.wait()
    out = []
    for n in range(runs):
        spoke = b.spokes[n % len(b.spokes)]
        restored[spoke] = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await b.clients[spoke].patch(MLSERVICE, NAMESPACE, MLSVC, {"spec": {"default": "drifted"}},
                                     field_manager="bench-drift")
        out.append(await asyncio.wait_for(restored[spoke], 30) - t0)
    for t in tasks:
        t.cancel()
    return out
