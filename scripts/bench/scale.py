"""Scale: cold start to all FullyApplied for N HyperMLServices x k spokes.

Each case has a hub namespace of its own.  The N HyperMLServices (one 2 KB MLService each,
to spokes 1..k) are created with no controller running; then a fresh controller process
watching only that namespace is started and the clock runs from its spawn until a hub watch
has seen every one of them FullyApplied (and then Ready, which needs the simulator's status).
Measured per case: wall time, API requests to every server (apiserver_request_total,
spawn → settled; on spokes the simulator's status writes are in there too, counted apart),
controller CPU seconds (/proc/<pid>/stat; also by thread) and peak RSS (VmHWM), and, to see
what bounded the wall time, the CPU used by the environment's servers (API servers, etcd,
simulator) and how busy the machine's cores were (/proc/stat, other users included).  Between cases the
controller is stopped and the case's spoke objects are deleted.

Growth: linear fits of time, CPU and peak RSS against N for each k; memory per CR (slope)
and per cluster (difference between k values at the largest N); per-CR cost = (time or CPU
after the controller is ready) / N, flagged super-linear when it grows > 1.5x from the
smallest to the largest N.

Far-away spokes (``far_away``): the same cold start with every spoke behind a latency proxy
(``Bench.far_away``) at each of some round trips, 0 ms (the proxy in the path, loopback)
included, against a latency floor: the request floor (``request_floor_s``) plus the
sequential round trips a cold start cannot avoid (``ROUND_TRIPS``) times the round trip.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import (
    Bench,
    HubWatch,
    busy_pct,
    by_verb,
    cond,
    env_cpu,
    hyper,
    linear_fit,
    log,
    machine_cpu,
    manifests,
    proc_stats,
    ratio,
    requests_total,
    thread_cpu,
)
from floors import apply_ops_max
from hmls_devenv.harness import Controller, mutating, requests_delta

SUPERLINEAR = 1.5
ROUND_TRIPS = 6
"""Spoke round trips one after the other before a CR can be FullyApplied, however many
requests run at once: a connection (the TCP and the TLS 1.3 handshakes: 2), discovery of the
manifests' kinds with the namespace read beside it (1), the three dependency groups Secret ->
MLServiceRuntime -> MLService, each sent once the one before is accepted (3).  The hub's
finalizer patch and status write are on the controller's side of the link (in the request
floor)."""
SIMULATOR = (("PATCH", "mlservices/status"), ("GET", "mlservices"))


def _applied(o: dict[str, Any]) -> bool:
    return cond(o, "FullyApplied") == "True"


def _ready(o: dict[str, Any]) -> bool:
    return cond(o, "Ready") == "True"


async def case(b: Bench, n: int, k: int, *, source: Path | None = None, tag: str = "", per_cr: int = 1,
               on_settled: Callable[[Controller, str], Awaitable[dict[str, Any]]] | None = None,
               last: bool = False) -> dict[str, Any]:
    """One cold start.  source: run the controller
    of another checkout (see ``Controller``); tag: part of the namespace's name; per_cr:
    manifests per CR (``manifests``: 3 are the seed's); on_settled: measured on the settled
    controller (and namespace) before it stops, its result kept under "settled"; last: no
    case follows on this environment, so its spoke objects are left to its teardown (at
    10,000 x 16, deleting 480,000 objects would take longer than the case)."""
    ns = f"scale-{n}-{k}" + (f"-{tag}" if tag else "")
    spokes = b.spokes[:k]
    await b.namespace(ns, ["hub", *spokes])
    await b.create_all([hyper(f"s-{i}", ns, spokes, manifests(per_cr, ns, str(i)))
                        for i in range(n)])
    ctl = Controller(b.env, namespaces=[ns], name=f"controller-{ns}", source=source)
    timeout = 120 + n * k * 0.2
    async with HubWatch(b.hub, ns) as hub:
        before = await b.requests(["hub", *spokes])
        machine0, servers0 = machine_cpu(), env_cpu(b.env)
        ctl.start(wait=False)
        startup = await ctl.ready()
        at_ready = proc_stats(ctl.pid)
        t_applied = await hub.until(_applied, n, timeout) - ctl.started
        at_applied = proc_stats(ctl.pid)
        t_ready = await hub.until(_ready, n, timeout) - ctl.started
        counters = await ctl.settle(quiet=1.0, timeout=timeout)
        settled, threads = proc_stats(ctl.pid), thread_cpu(ctl.pid)
        machine1, servers1 = machine_cpu(), env_cpu(b.env)
        delta = requests_delta(await b.requests(["hub", *spokes]), before)
    after = await on_settled(ctl, ns) if on_settled else None
    await ctl.halt()
    if not last:
        await b.clean(ns, spokes)
    hub_req, spoke_req = delta["hub"], sum((delta[s] for s in spokes), Counter())
    sim = sum(spoke_req[key] for key in SIMULATOR)
    result = {
        "crs": n, "spokes": k, "manifests_per_cr": per_cr, "applies": n * k * per_cr,
        "startup_s": startup, "to_fully_applied_s": t_applied, "to_ready_s": t_ready,
        "cpu_s": {"at_ready": at_ready.cpu_s, "at_fully_applied": at_applied.cpu_s,
                  "settled": settled.cpu_s},
        "rss_mb": settled.rss_mb, "peak_rss_mb": settled.hwm_mb,
        "controller_threads_cpu_s": threads,
        "servers_cpu_s": servers1 - servers0, "machine_busy_pct": busy_pct(machine0, machine1),
        "controller": {k_: int(v) for k_, v in counters.items()},
        "requests": {
            "hub": {"total": requests_total(hub_req), "mutating": mutating(hub_req),
                    "by_verb": by_verb(hub_req)},
            "spokes": {"total": requests_total(spoke_req), "mutating": mutating(spoke_req),
                       "by_verb": by_verb(spoke_req), "simulator": int(sim)},
            "by_server": {name: requests_total(delta[name]) for name in ["hub", *spokes]}},
        "per_cr_ms": 1000 * (t_applied - startup) / n,
        "cpu_per_cr_ms": 1000 * (at_applied.cpu_s - at_ready.cpu_s) / n,
    }
    if after is not None:
        result["settled"] = after
    return result


def request_floor_s(n: int, k: int, per_cr: int, write_ops: float) -> float:
    """Every write of a cold start — an apply per (CR x cluster x manifest), a finalizer
    patch and at least one status write per CR — at the best write throughput measured."""
    return (n * k * per_cr + 2 * n) / write_ops


async def far_away(b: Bench, n: int, k: int, rtts_ms: list[int], write_ops: float, *,
                   per_cr: int = 3) -> dict[str, Any]:
    """``case`` with every spoke ``rtt`` ms away, for each of ``rtts_ms``; wall time against
    the latency floor and against the 0 ms (loopback through the proxy) case of the run."""
    cases = []
    for ms in rtts_ms:
        async with b.far_away(ms / 1000):
            c = await case(b, n, k, per_cr=per_cr, tag=f"rtt{ms}")
        c["rtt_ms"] = ms
        c["request_floor_s"] = request_floor_s(n, k, per_cr, write_ops)
        c["latency_floor_s"] = c["request_floor_s"] + ROUND_TRIPS * ms / 1000
        c["wall_over_floor"] = ratio(c["to_fully_applied_s"], c["latency_floor_s"])
        cases.append(c)
    loopback = next((c["to_fully_applied_s"] for c in cases if c["rtt_ms"] == 0), None)
    for c in cases:
        c["over_loopback"] = ratio(c["to_fully_applied_s"], loopback) if loopback else None
        log(f"{n} CRs x {k} spokes at {c['rtt_ms']} ms round trip: FullyApplied in "
            f"{c['to_fully_applied_s']:.1f} s, floor {c['latency_floor_s']:.1f} s "
            f"(x{c['wall_over_floor']}), x{c['over_loopback']} the loopback case")
    return {"crs": n, "spokes": k, "manifests_per_cr": per_cr, "round_trips": ROUND_TRIPS,
            "write_ops_per_s": write_ops, "controller_flags": [], "cases": cases}


def growth(cases: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spokes = sorted({c["spokes"] for c in cases})
    for k in spokes:
        mine = sorted((c for c in cases if c["spokes"] == k), key=lambda c: c["crs"])
        xs = [float(c["crs"]) for c in mine]
        small, large = mine[0], mine[-1]
        time_growth = large["per_cr_ms"] / small["per_cr_ms"]
        cpu_growth = large["cpu_per_cr_ms"] / small["cpu_per_cr_ms"]
        out[f"k{k}"] = {
            "time_vs_crs": linear_fit(xs, [c["to_fully_applied_s"] for c in mine]),
            "cpu_vs_crs": linear_fit(xs, [c["cpu_s"]["settled"] for c in mine]),
            "peak_rss_vs_crs": linear_fit(xs, [c["peak_rss_mb"] for c in mine]),
            "per_cr_time_growth": time_growth, "per_cr_cpu_growth": cpu_growth,
            "superlinear": time_growth > SUPERLINEAR or cpu_growth > SUPERLINEAR,
        }
        out[f"k{k}"]["rss_per_cr_kb"] = out[f"k{k}"]["peak_rss_vs_crs"]["slope"] * 1024
    n_max = max(c["crs"] for c in cases)
    at_max = {c["spokes"]: c for c in cases if c["crs"] == n_max}
    lo, hi = min(at_max), max(at_max)
    out["rss_per_cluster_mb"] = {
        "crs": n_max,
        "mb": (at_max[hi]["peak_rss_mb"] - at_max[lo]["peak_rss_mb"]) / (hi - lo) if hi > lo else None}
    return out


async def run(b: Bench, floors: dict[str, Any]) -> dict[str, Any]:
    sizes, spoke_counts = ((50, 100), (1, 2)) if b.quick else ((100, 300, 1000), (1, 4))
    cases = []
    for k in spoke_counts:
        for n in sizes:
            c = await case(b, n, k)
            c["apply_floor_s"] = n * k / apply_ops_max(floors)
            log(f"scale {n} CRs x {k} spokes: FullyApplied in {c['to_fully_applied_s']:.1f} s "
                f"(startup {c['startup_s']:.1f} s; apply-throughput floor {c['apply_floor_s']:.1f} s, "
                f"x{ratio(c['to_fully_applied_s'], c['apply_floor_s'])}), Ready in "
                f"{c['to_ready_s']:.1f} s, CPU {c['cpu_s']['settled']:.1f} s, peak RSS "
                f"{c['peak_rss_mb']:.0f} MB, requests hub {c['requests']['hub']['total']} "
                f"spokes {c['requests']['spokes']['total']}")
            cases.append(c)
    fits = growth(cases)
    for k in spoke_counts:
        g = fits[f"k{k}"]
        log(f"growth at {k} spokes: {g['time_vs_crs']['slope'] * 1000:.1f} ms/CR, "
            f"{g['rss_per_cr_kb']:.1f} KB/CR, per-CR time x{g['per_cr_time_growth']:.2f} and CPU "
            f"x{g['per_cr_cpu_growth']:.2f} smallest→largest"
            + (" - SUPER-LINEAR" if g["superlinear"] else ""))
    return {"cases": cases, "growth": fits}
