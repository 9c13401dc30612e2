"""Apply latency: create a HyperMLService through the API → FullyApplied seen by a hub watch
(common.HubWatch), for 1, 4 and 8 spokes (as many as the environment has) x 1 and 5
manifests, with the controller running.  Each run is a new HyperMLService whose manifests have
names of their own, so every apply creates objects; runs are sequential and each waits for Ready
(the simulator's status, 0.5 s later) so that run i+1 does not overlap run i's status feedback.

Next to it:
  lower bound  from the floors of the same run (p50s), for m manifests on any number of
               spokes:   LB = 2·watch + hub_patch + d(m)·apply1
               watch = status patch → hub watch event (once for the controller seeing the
               create, once for us seeing its status write; each includes its write);
               hub_patch = the finalizer the controller adds first; d(m) = the controller's
               dependency depth (apply_order groups, applied one after the other: 1 for 1
               manifest, 3 for 5); apply1 = ClusterClient SSA at concurrency 1.  Clusters are
               applied in parallel, so k does not appear: what the measured time exceeds LB
               by is the controller's own work plus contention for the 2 cores.
  throughput   (in the report) k·m applies at the best apply throughput of the floors (one
               server, concurrency 16): what the 2 cores need for the applies alone when they
               cannot all run at once.  Not a bound (k servers may together go a little faster
               than one), but it shows when the machine, not the latency chain, sets the time.
  kubectl      what a release engineer would run instead: ``kubectl apply -f`` of the same
               manifests to each cluster, one after the other (client-side apply, warm
               discovery cache); the wall time of the real kubectl processes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import yaml
from common import NAMESPACE, Bench, HubWatch, cond, hyper, log, manifests, summary
from floors import p50_s

from hmls.domain.models import Owner
from hmls.domain.render import apply_order, materialize
from hmls.kube.resources import HMLS

SPOKES = (1, 4, 8)
MANIFESTS = (1, 5)
KUBECTL_NS = "bench-kubectl"


def depth(objs: list[dict[str, Any]]) -> int:
    """How many dependency groups the controller applies one after the other."""
    owner = Owner(NAMESPACE, "x", "x")
    return len(apply_order([materialize(owner, "c", o) for o in objs]))


def lower_bound(floors: dict[str, Any], count: int) -> dict[str, Any]:
    d = depth(manifests(count, NAMESPACE, "x"))
    watch, patch, apply1 = (p50_s(floors, k) for k in ("watch_delivery", "hub_patch", "apply"))
    return {"ms": (2 * watch + patch + d * apply1) * 1000, "depth": d,
            "formula": "2·watch + hub_patch + d·apply1 (floor p50s)"}


async def _kubectl(b: Bench, clusters: list[str], count: int, tag: str) -> float:
    """Sequential ``kubectl apply -f`` of the manifests to each cluster; wall seconds."""
    path = b.env.dir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump_all(manifests(count, KUBECTL_NS, tag)))
    t0 = time.perf_counter()
    for c in clusters:
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(b.env.kubeconfig(c)), "apply", "-f", str(path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl apply on {c} failed: {err.decode()}")
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def _is(name: str, ctype: str, o: dict[str, Any]) -> bool:
    return bool(o["metadata"]["name"] == name and cond(o, ctype) == "True")


async def sample(b: Bench, watcher: HubWatch, clusters: list[str], m: int, runs: int,
                 prefix: str = "al") -> tuple[list[float], list[float]]:
    """runs sequential creates of a HyperMLService with m manifests on clusters in the
    watcher's namespace (a controller running); seconds to FullyApplied and to Ready for each."""
    applied, ready = [], []
    ns = watcher.namespace
    for i in range(runs):
        name = f"{prefix}-{len(clusters)}-{m}-{i}"
        obj = hyper(name, ns, clusters, manifests(m, ns, name))

        fa = watcher.when(functools.partial(_is, name, "FullyApplied"))
        rd = watcher.when(functools.partial(_is, name, "Ready"))
        t0 = time.perf_counter()
        await b.hub.create(HMLS, ns, obj)
        applied.append(await asyncio.wait_for(fa, 60) - t0)
        ready.append(await asyncio.wait_for(rd, 60) - t0)
    return applied, ready


async def run(b: Bench, floors: dict[str, Any]) -> dict[str, Any]:
    runs = 10 if b.quick else 50
    kubectl_runs = 2 if b.quick else 10
    await b.namespace(NAMESPACE, ["hub", *b.spokes])
    await b.namespace(KUBECTL_NS, b.spokes)
    await _kubectl(b, b.spokes, max(MANIFESTS), "kc-warm")  # discovery cache, as on a desk
    watcher = await HubWatch(b.hub, NAMESPACE).start()
    cases = []
    for k in (k for k in SPOKES if k <= len(b.spokes)):
        clusters = b.spokes[:k]
        for m in MANIFESTS:
            applied, ready = await sample(b, watcher, clusters, m, runs)
            kubectl = [await _kubectl(b, clusters, m, f"kc-{k}-{m}-{i}") for i in range(kubectl_runs)]
            case: dict[str, Any] = {
                "spokes": k, "manifests": m, "create_to_fully_applied": summary(applied),
                "create_to_ready": summary(ready), "kubectl_sequential": summary(kubectl),
                "lower_bound": lower_bound(floors, m)}
            p50, lb = case["create_to_fully_applied"]["p50_ms"], case["lower_bound"]["ms"]
            kc = case["kubectl_sequential"]["p50_ms"]
            log(f"apply latency {k} spokes x {m} manifests: p50 {p50:.0f} ms p90 "
                f"{case['create_to_fully_applied']['p90_ms']:.0f} ms p99 "
                f"{case['create_to_fully_applied']['p99_ms']:.0f} ms | lower bound {lb:.0f} ms "
                f"(x{p50 / lb:.1f}) | kubectl {kc:.0f} ms (hmls/kubectl x{p50 / kc:.2f})")
            cases.append(case)
    await watcher.stop()
    return {"runs": runs, "kubectl_runs": kubectl_runs, "cases": cases,
            "note": "create_to_ready includes the simulator's 0.5 s status delay"}
