"""Idle cost and restart, on an environment of its own (hub, 4 spokes, ingress) so that its
two T-long windows can run while the other measurements run on the main environment (the
set-up before and the restart after do not overlap them; the idle environment's own CPU
use during the windows is reported, as the background load it put on the rest).

N HyperMLServices (one 2 KB MLService each) x 4 spokes are created and a controller
watching only their namespace brings them to Ready and settles.  Then:

  idle        T seconds with nothing changing: mutating requests (POST, PUT, PATCH, APPLY,
              DELETE, DELETECOLLECTION in apiserver_request_total) on every API server,
              minus a no-controller baseline: the same servers over another T seconds right
              after the controller is stopped (the API servers' own lease renewals etc.);
              the controller's CPU seconds and RSS over the window (/proc/<pid>).
  restart     a new controller process starts on the settled state; once it has reconciled
              every HyperMLService and settled, its ``hmls_apply_total{result="applied"}`` is
              the number of applies it re-sent (target 0), with its status writes and the
              mutating requests the restart caused.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from common import (
    Bench,
    HubWatch,
    cond,
    env_cpu,
    hyper,
    log,
    mlservice,
    proc_stats,
    reads,
    writes_by_resource,
)
from hmls_devenv.harness import Controller, Requests, mutating, requests_delta

NS = "idle"
SPOKES = 4


def _per_server(window: Requests, baseline: Requests) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for c, counts in window.items():
        base = baseline.get(c, Counter())
        out[c] = {"mutating": mutating(counts), "baseline_mutating": mutating(base),
                  "non_lease": mutating(counts, leases=False),
                  "baseline_non_lease": mutating(base, leases=False),
                  "reads": reads(counts), "baseline_reads": reads(base),
                  "writes": writes_by_resource(counts),
                  "baseline_writes": writes_by_resource(base)}
        out[c]["controller_mutating"] = out[c]["mutating"] - out[c]["baseline_mutating"]
        out[c]["controller_non_lease"] = out[c]["non_lease"] - out[c]["baseline_non_lease"]
        out[c]["controller_reads"] = out[c]["reads"] - out[c]["baseline_reads"]
    return out


def _size(b: Bench) -> tuple[int, float]:
    return (100, 20.0) if b.quick else (1000, 300.0)


async def prepare(b: Bench) -> Controller:
    """Create the HyperMLServices, start a controller and wait until all are Ready and it
    has settled."""
    n, _ = _size(b)
    spokes = b.spokes[:SPOKES]
    await b.namespace(NS, ["hub", *spokes])
    await b.create_all([hyper(f"i-{i}", NS, spokes, [mlservice(f"svc-{i}", NS)])
                        for i in range(n)])
    ctl = Controller(b.env, namespaces=[NS], name="controller-idle")
    async with HubWatch(b.hub, NS) as hub:
        ctl.start(wait=False)
        await hub.until(lambda o: cond(o, "Ready") == "True", n, 120 + n * SPOKES * 0.2)
    await ctl.settle(quiet=2.0)
    log(f"idle: {n} HyperMLServices x {len(spokes)} spokes settled")
    return ctl


async def windows(b: Bench, ctl: Controller) -> dict[str, Any]:
    """T seconds with the controller, then T seconds without it on the same servers."""
    n, window = _size(b)
    cpu0 = env_cpu(b.env)
    r0, s0, c0 = await b.requests(), proc_stats(ctl.pid), await ctl.counters()
    await asyncio.sleep(window)
    r1, s1, c1 = await b.requests(), proc_stats(ctl.pid), await ctl.counters()
    await ctl.halt()
    log(f"idle: {window:.0f} s with the controller done; {window:.0f} s no-controller baseline")
    r2 = await b.requests()
    await asyncio.sleep(window)
    r3 = await b.requests()
    servers_cpu = env_cpu(b.env) - cpu0
    per_server = _per_server(requests_delta(r1, r0), requests_delta(r3, r2))
    writes = sum(s["controller_mutating"] for s in per_server.values())
    non_lease = sum(s["controller_non_lease"] for s in per_server.values())
    controller = {"cpu_s": s1.cpu_s - s0.cpu_s,
                  "cpu_pct_of_one_core": 100 * (s1.cpu_s - s0.cpu_s) / window,
                  "rss_mb_start": s0.rss_mb, "rss_mb_end": s1.rss_mb, "peak_rss_mb": s1.hwm_mb,
                  "counters_delta": {k: c1[k] - c0[k] for k in c0 if k != "queue_depth"}}
    log(f"idle {window:.0f} s: mutating requests minus baseline {writes} (all servers; "
        f"other than lease renewals: {non_lease}), CPU {controller['cpu_s']:.2f} s "
        f"({controller['cpu_pct_of_one_core']:.2f}% of a core), RSS {s0.rss_mb:.0f} -> "
        f"{s1.rss_mb:.0f} MB")
    return {"crs": n, "spokes": SPOKES, "window_s": window, "servers": per_server,
            "controller_mutating_total": writes, "controller_non_lease_total": non_lease,
            "controller": controller, "environment_cpu_s": servers_cpu,
            "environment_cpu_pct_of_one_core": 100 * servers_cpu / (2 * window)}


async def restart(b: Bench) -> dict[str, Any]:
    """A new controller on the settled state: how many applies does it re-send?"""
    n, _ = _size(b)
    before = await b.requests()
    ctl = Controller(b.env, namespaces=[NS], name="controller-idle-restart")
    t0 = time.perf_counter()
    ctl.start(wait=False)
    settled = await ctl.settle(quiet=2.0, min_reconciles=n, timeout=120 + n * 0.2)
    settle_s = time.perf_counter() - t0
    delta = requests_delta(await b.requests(), before)
    writes = {c: w for c, v in delta.items() if (w := writes_by_resource(v))}
    stats = proc_stats(ctl.pid)
    await ctl.halt()
    result = {"applies_resent": int(settled["applied"]), "unchanged": int(settled["unchanged"]),
              "status_writes": int(settled["status_writes"]),
              "reconciles": int(settled["reconciles"]), "settle_s": settle_s,
              "cpu_s": stats.cpu_s, "peak_rss_mb": stats.hwm_mb, "writes": writes,
              "non_lease_writes": sum(mutating(v, leases=False) for v in delta.values())}
    log(f"restart: {result['applies_resent']} applies re-sent (target 0), "
        f"{result['status_writes']} status writes, {result['non_lease_writes']} writes other than "
        f"lease renewals, settled in {settle_s:.1f} s")
    return result
