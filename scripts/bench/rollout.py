"""Progressive rollout step overhead: the time from one cluster finishing its step (Ready for
soakSeconds, status ``Done``) to the next cluster's objects carrying the new revision.

One HyperMLService over every spoke, ``strategy: Progressive``, ``maxConcurrency: 1``,
``soakSeconds: 1``, no traffic (so no drain step).  For each new revision (a changed
``minReplicas``) the clock starts when a hub watch shows cluster i ``Done`` and stops when a
watch on cluster i+1 shows its MLService with the new spec.  Lower bound from the floors: the
hub watch that shows Done (both clocks are watches, so one watch latency cancels) plus one
status patch and one apply; the controller's part is one reconcile (the step after Done starts
in the reconcile that wrote it, the apply happens in the requeued one).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from typing import Any

from common import NAMESPACE, Bench, HubWatch, hyper, log, mlservice, summary
from floors import p50_s
from hmls_devenv.harness import Controller
from hmls_devenv.simulator import MLSERVICE

from hmls.kube.client import Obj
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer

NAME = "rollout"
MLSVC = "svc-rollout"


def _done(obj: Obj, cluster: str, revision: int) -> bool:
    steps = ((obj.get("status") or {}).get("rollout") or {}).get("clusters") or []
    return obj["metadata"]["name"] == NAME and any(
        s.get("cluster") == cluster and s.get("phase") == "Done" and s.get("revision") == revision
        for s in steps)


async def run(b: Bench, ctl: Controller, floors: dict[str, Any]) -> dict[str, Any]:
    revisions = 2 if b.quick else 6
    spokes = b.spokes
    await b.namespace(NAMESPACE, ["hub", *spokes])
    watcher = await HubWatch(b.hub, NAMESPACE).start()
    seen: dict[str, asyncio.Future[float]] = {}
    wanted: dict[str, int] = {}

    def on_spoke(cluster: str) -> Any:
        def event(kind: str, old: Obj | None, new: Obj | None) -> None:
            fut = seen.get(cluster)
            replicas = ((new or {}).get("spec", {}).get("releases") or [{}])[0].get(
                "predictor", {}).get("minReplicas")
            if fut is not None and not fut.done() and replicas == wanted.get(cluster):
                fut.set_result(time.perf_counter())
        return event

    informers = [Informer(b.clients[s], MLSERVICE, namespace=NAMESPACE, on_event=on_spoke(s))
                 for s in spokes]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    for inf in informers:
        await inf.synced.wait()

    def body(replicas: int) -> Obj:
        svc = mlservice(MLSVC, NAMESPACE)
        svc["spec"]["releases"][0]["predictor"]["minReplicas"] = replicas
        obj = hyper(NAME, NAMESPACE, spokes, [svc])
        obj["spec"]["rollout"] = {"strategy": "Progressive", "maxConcurrency": 1,
                                  "soakSeconds": 1, "progressDeadlineSeconds": 60}
        return obj

    first = watcher.when(lambda o: all(_done(o, s, 1) for s in spokes))
    await b.hub.create(HMLS, NAMESPACE, body(1))
    await asyncio.wait_for(first, 60)
    overheads: list[float] = []
    steps: list[float] = []
    for revision in range(2, revisions + 2):
        stored = await b.hub.get(HMLS, NAMESPACE, NAME)
        assert stored is not None
        new = body(revision)
        new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        new["status"] = stored.get("status")
        done = {s: watcher.when(functools.partial(_done, cluster=s, revision=revision))
                for s in spokes}
        for s in spokes:
            wanted[s] = revision
            seen[s] = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await b.hub.request("PUT", HMLS.path(NAMESPACE, NAME), body=new)
        applied = await asyncio.wait_for(seen[spokes[0]], 60)
        steps.append(applied - t0)
        for prev, nxt in itertools.pairwise(spokes):
            finished = await asyncio.wait_for(done[prev], 60)
            overheads.append(await asyncio.wait_for(seen[nxt], 60) - finished)
        await asyncio.wait_for(done[spokes[-1]], 60)
        log(f"rollout: revision {revision} over {len(spokes)} spokes, step overheads "
            f"{[round(1000 * x) for x in overheads[-(len(spokes) - 1):]]} ms")
    for t in tasks:
        t.cancel()
    await watcher.stop()
    await b.hub.delete(HMLS, NAMESPACE, NAME)
    floor = p50_s(floors, "status_patch") + p50_s(floors, "apply") + p50_s(floors, "watch_delivery")
    return {"spokes": len(spokes), "revisions": revisions,
            "step_overhead_ms": summary(overheads),
            "first_step_ms": summary(steps),
            "lower_bound_ms": 1000 * floor}
