"""Fleet scale (``make bench-scale``): cold start to all FullyApplied for {1,000, 3,000,
10,000} HyperMLServices x {4, 16} spokes, each CR carrying the seed's three manifests
(MLService, Secret, MLServiceRuntime), against the floor of the requests the run must make.

One environment: etcd, a hub, 16 spokes, the ingress, the simulator.  First the floors
phase (floors.py: the best throughput these servers show for a write, here ClusterClient's
server-side apply at concurrency 16).  Then each case (scale.case: CRs created with no
controller running, clock from a fresh controller's spawn until a hub watch has seen every
CR FullyApplied).  Per case:

  floor_s      every write the cold start must make — an apply per (CR x cluster x
               manifest), a finalizer patch and at least one status write per CR — at the
               floors' best write throughput (the hub creates come before the clock);
               ``wall_over_floor`` = to_fully_applied_s / floor_s
  floor_with_simulator_s  the floor plus the simulator's status writes of the same run at
               the same throughput: on this machine the stand-in for each spoke's MLService
               controller shares the 2 cores with hmls and the servers (a real spoke runs its
               own); ``wall_over_floor_with_simulator`` = to_fully_applied_s / that
  rss_kb_per_object  (peak RSS - the RSS of the same controller settled with no CR) /
               (CRs x clusters): the cost of one (CR x cluster) pair, its 3 objects, with the
               fixed costs of a loaded controller (connection pools, allocator high water)
               in it; ``growth.kK.rss_kb_per_object_marginal``: the slope of peak RSS over
               CRs at K spokes, per (CR x cluster): the cost beyond a fixed base
  requests     by verb and by server, controller CPU seconds, peak RSS (from scale.case)

On the largest case run, before its controller stops: an idle window (IDLE_S seconds of
writes to the hub and the spokes, the simulator's and the API servers' own leases left out:
target 0) and a restart (a second controller on the settled fleet: re-applies, status
writes, seconds to settled; target 0 re-applies).

A case whose floor estimate exceeds ``--budget`` seconds is not run; the report says so
and why.  With ``--rtt 0,50,200`` each case run is then run again with every spoke that many
milliseconds away (scale.far_away: behind a latency proxy, against a latency floor and the
0 ms case).  Results: OUT/scale.json, OUT/scale.md, OUT/scale.png.

  python scripts/bench/bench.py scale [--out docs/benchmarks] [--budget 900] [--cases 1000x4,...]
                                [--rtt 0,50,200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import floors
import scale
from common import REPO, Bench, linear_fit, log, proc_stats, ratio, rtt_list
from floors import apply_ops_max
from hmls_devenv import binaries
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, mutating, requests_delta
from report import far_away, machine

from hmls.kube import errors

SPOKES = 16
PER_CR = 3
CASES = ((1000, 4), (3000, 4), (10000, 4), (1000, 16), (3000, 16), (10000, 16))
IDLE_S = 60.0
RSS_TARGET_KB = 4.0
FLOOR_TARGET = 1.5


def floor_s(n: int, k: int, write_ops: float) -> float:
    return scale.request_floor_s(n, k, PER_CR, write_ops)


async def base_rss(b: Bench) -> float:
    """Peak RSS (MB) of a controller settled on a namespace with no HyperMLService."""
    await b.namespace("scale-empty", ["hub"])
    ctl = Controller(b.env, namespaces=["scale-empty"], name="controller-empty")
    ctl.start(wait=False)
    await ctl.settle(quiet=2.0, timeout=120)
    mb = proc_stats(ctl.pid).hwm_mb
    await ctl.halt()
    return mb


async def idle_and_restart(b: Bench, ctl: Controller, ns: str, n: int, spokes: list[str]
                           ) -> dict[str, Any]:
    servers = ["hub", *spokes]
    before, counters0 = await b.requests(servers), await ctl.counters()
    await asyncio.sleep(IDLE_S)
    delta = requests_delta(await b.requests(servers), before)
    counters1 = await ctl.counters()
    sim = ("PATCH", "mlservices/status")
    writes = {name: mutating(c, leases=False) - (c[sim] if name != "hub" else 0)
              for name, c in delta.items()}
    idle = {"seconds": IDLE_S, "writes": sum(writes.values()),
            "writes_by_server": {k: v for k, v in writes.items() if v},
            "controller": {k: counters1[k] - counters0[k]
                           for k in ("applied", "status_writes", "reconciles")}}
    log(f"idle {IDLE_S:.0f} s: {idle['writes']} writes {idle['writes_by_server']}, "
        f"controller {idle['controller']}")
    await ctl.halt()
    again = Controller(b.env, namespaces=[ns], name=f"controller-{ns}-restart")
    t0 = time.perf_counter()
    again.start(wait=False)
    counters = await again.settle(quiet=2.0, timeout=600, min_reconciles=n)
    settled_s = time.perf_counter() - t0 - 2.0
    restart = {"to_settled_s": settled_s, "reapplies": int(counters["applied"]),
               "status_writes": int(counters["status_writes"]),
               "unchanged": int(counters["unchanged"]), "peak_rss_mb": proc_stats(again.pid).hwm_mb}
    log(f"restart: settled in {settled_s:.1f} s, {restart['reapplies']} re-applies, "
        f"{restart['status_writes']} status writes")
    await again.halt()
    return {"idle": idle, "restart": restart}


def derive(c: dict[str, Any], write_ops: float, base_mb: float) -> None:
    """A case's figures against the floor and the base, from what it measured."""
    n, k = c["crs"], c["spokes"]
    c["floor_s"] = floor_s(n, k, write_ops)
    c["wall_over_floor"] = ratio(c["to_fully_applied_s"], c["floor_s"])
    # hmls writes spoke objects by server-side apply (verb APPLY): a spoke PATCH is the
    # simulator's status write
    simulator_writes = c["requests"]["spokes"]["by_verb"].get("PATCH", 0)
    c["floor_with_simulator_s"] = c["floor_s"] + simulator_writes / write_ops
    c["wall_over_floor_with_simulator"] = ratio(c["to_fully_applied_s"],
                                                c["floor_with_simulator_s"])
    c["rss_kb_per_object"] = (c["peak_rss_mb"] - base_mb) * 1024 / (n * k)


def _fits(cases: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted({c["spokes"] for c in cases}):
        mine = sorted((c for c in cases if c["spokes"] == k), key=lambda c: c["crs"])
        if len(mine) < 2:
            continue
        xs = [float(c["crs"]) for c in mine]
        per_cr = [c["to_fully_applied_s"] / c["crs"] for c in mine]
        rss = linear_fit(xs, [c["peak_rss_mb"] for c in mine])
        out[f"k{k}"] = {
            "time_vs_crs": linear_fit(xs, [c["to_fully_applied_s"] for c in mine]),
            "cpu_vs_crs": linear_fit(xs, [c["cpu_s"]["settled"] for c in mine]),
            "rss_vs_crs": rss,
            "rss_kb_per_object_marginal": rss["slope"] * 1024 / k,
            "per_cr_time_growth": per_cr[-1] / per_cr[0],
            "superlinear": per_cr[-1] / per_cr[0] > scale.SUPERLINEAR}
    return out


async def suite(env: Environment, budget: float, wanted: list[tuple[int, int]],
                rtts: list[int]) -> dict[str, Any]:
    b = Bench(env, quick=False)
    await b.open()
    try:
        await b.join_spokes()
        result: dict[str, Any] = {
            "machine": {**machine(), "kube_apiserver": (await b.hub.version()).get("gitVersion"),
                        "etcd": binaries.ETCD_VERSION,
                        "api_servers": len(env.state().clusters)},
            "manifests_per_cr": PER_CR, "targets": {"wall_over_floor": FLOOR_TARGET,
                                                    "rss_kb_per_object": RSS_TARGET_KB,
                                                    "idle_writes": 0, "restart_reapplies": 0}}
        fl = result["floors"] = await floors.run(b)
        write_ops = apply_ops_max(fl)
        result["write_ops_per_s"] = write_ops
        base = result["base_rss_mb"] = await base_rss(b)
        log(f"best write throughput {write_ops:.0f} ops/s; controller base RSS {base:.0f} MB")
        runnable = [(n, k) for n, k in wanted if floor_s(n, k, write_ops) <= budget]
        result["not_run"] = [
            {"crs": n, "spokes": k, "floor_s": round(floor_s(n, k, write_ops)),
             "why": f"its floor alone ({floor_s(n, k, write_ops):.0f} s at {write_ops:.0f} "
                    f"writes/s on this machine) exceeds the budget of {budget:.0f} s"}
            for n, k in wanted if (n, k) not in runnable]
        largest = max(runnable, key=lambda c: c[0] * c[1], default=None)
        cases = []

        async def at_largest(ctl: Controller, ns: str) -> dict[str, Any]:
            assert largest is not None
            return await idle_and_restart(b, ctl, ns, largest[0], b.spokes[:largest[1]])

        for n, k in runnable:
            try:
                c = await scale.case(b, n, k, per_cr=PER_CR, tag="fleet",
                                     on_settled=at_largest if (n, k) == largest else None,
                                     last=(n, k) == runnable[-1] and not rtts)
            except (TimeoutError, RuntimeError, errors.KubeError) as exc:
                # reported, and the cases after it still run: a 50-minute run is not lost
                log(f"fleet {n} CRs x {k} spokes FAILED: {type(exc).__name__}: {exc}")
                result["not_run"].append({"crs": n, "spokes": k,
                                          "floor_s": round(floor_s(n, k, write_ops)),
                                          "why": f"failed: {type(exc).__name__}: {exc}"})
                continue
            derive(c, write_ops, base)
            log(f"fleet {n} CRs x {k} spokes: FullyApplied in {c['to_fully_applied_s']:.1f} s, "
                f"floor {c['floor_s']:.1f} s (x{c['wall_over_floor']}), CPU "
                f"{c['cpu_s']['settled']:.0f} s, peak RSS {c['peak_rss_mb']:.0f} MB "
                f"({c['rss_kb_per_object']:.1f} KB per CR x cluster)")
            cases.append(c)
        result["cases"] = cases
        result["growth"] = _fits(cases)
        result["rtt"] = [await scale.far_away(b, c["crs"], c["spokes"], rtts, write_ops,
                                              per_cr=PER_CR) for c in cases if rtts]
        return result
    finally:
        await b.close()


def markdown(r: dict[str, Any], chart: str) -> str:
    m = r["machine"]
    t = r["targets"]
    lines = ["# Fleet scale", "",
             f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
             f"kube-apiserver {m['kube_apiserver']}, etcd {m['etcd']}, {m['api_servers']} API "
             f"servers (hub, {SPOKES} spokes, ingress) on one etcd, all on this machine with "
             "the controller.", "",
             f"Each CR carries {r['manifests_per_cr']} manifests (the seed's MLService, Secret, "
             f"MLServiceRuntime). Floor = every write of the cold start (an apply per CR x "
             f"cluster x manifest, a finalizer patch and a status write per CR) at the best "
             f"write throughput of the floors phase ({r['write_ops_per_s']:.0f} ops/s); with "
             "simulator: plus the simulator's status writes (one per MLService and cluster), "
             "which share the 2 cores here and run on each spoke's own machines in a real "
             f"fleet. RSS per object = (peak RSS - {r['base_rss_mb']:.0f} MB base) / (CRs x clusters). "
             f"Targets: wall/floor ≤ {t['wall_over_floor']}, ≤ {t['rss_kb_per_object']} KB per "
             "(CR x cluster), 0 idle writes, 0 re-applies on restart.", "",
             "| CRs | spokes | objects | →FullyApplied s | floor s | wall/floor | "
             "wall/floor with simulator | CPU s | peak RSS MB | KB per CR x cluster | "
             "hub requests | spoke requests | status writes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        req = c["requests"]
        lines.append(
            f"| {c['crs']} | {c['spokes']} | {c['applies']} | {c['to_fully_applied_s']:.1f} | "
            f"{c['floor_s']:.1f} | {c['wall_over_floor']} | "
            f"{c['wall_over_floor_with_simulator']} | {c['cpu_s']['settled']:.0f} | "
            f"{c['peak_rss_mb']:.0f} | {c['rss_kb_per_object']:.1f} | {req['hub']['total']} | "
            f"{req['spokes']['total']} | {c['controller']['status_writes']} |")
    lines.append("")
    for n in r["not_run"]:
        lines.append(f"- not run: {n['crs']} x {n['spokes']}: {n['why']}")
    for key, g in r["growth"].items():
        lines.append(f"- {key[1:]} spokes: time ≈ {g['time_vs_crs']['intercept']:.1f} s + "
                     f"{g['time_vs_crs']['slope'] * 1000:.1f} ms·CRs, peak RSS ≈ "
                     f"{g['rss_vs_crs']['intercept']:.0f} MB + "
                     f"{g['rss_vs_crs']['slope'] * 1024:.1f} KB·CRs "
                     f"({g['rss_kb_per_object_marginal']:.1f} KB per CR x cluster beyond that "
                     "base); per-CR time "
                     f"x{g['per_cr_time_growth']:.2f} smallest→largest: "
                     + ("**super-linear**" if g["superlinear"] else "not super-linear"))
    for c in r["cases"]:
        s = c.get("settled")
        if s:
            lines += ["", f"At {c['crs']} x {c['spokes']}: idle {s['idle']['seconds']:.0f} s → "
                      f"{s['idle']['writes']} writes {s['idle']['writes_by_server'] or ''}; "
                      f"restart → settled in {s['restart']['to_settled_s']:.1f} s with "
                      f"{s['restart']['reapplies']} re-applies and "
                      f"{s['restart']['status_writes']} status writes."]
    lines += ["", f"![wall time against the floor]({chart})", ""]
    for far in r.get("rtt", []):
        lines += far_away(far)
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in sorted({c["spokes"] for c in r["cases"]}):
        mine = sorted((c for c in r["cases"] if c["spokes"] == k), key=lambda c: c["crs"])
        xs = [c["crs"] for c in mine]
        line = left.plot(xs, [c["to_fully_applied_s"] for c in mine], "o-",
                         label=f"hmls, {k} spokes")[0]
        left.plot(xs, [c["floor_s"] for c in mine], "--", color=line.get_color(),
                  label=f"request floor, {k} spokes")
        right.plot(xs, [c["rss_kb_per_object"] for c in mine], "o-", label=f"{k} spokes")
    right.axhline(RSS_TARGET_KB, color="grey", linestyle=":", label="target")
    for ax, title in ((left, "cold start → all FullyApplied (s)"),
                      (right, "RSS per (CR x cluster) beyond the base (KB)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("HyperMLServices")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks"))
    parser.add_argument("--dir", default=str(REPO / ".hmls-env" / "bench-scale"))
    parser.add_argument("--budget", type=float, default=900.0,
                        help="seconds of request floor above which a case is not run")
    parser.add_argument("--cases", default=",".join(f"{n}x{k}" for n, k in CASES),
                        help="comma-separated CRSxSPOKES")
    parser.add_argument("--rtt", type=rtt_list, default=[],
                        help="also run each case with the spokes this far away: round trips "
                             "in ms, comma-separated (e.g. 0,50,200; 0: the proxy on loopback)")
    parser.add_argument("--apiserver-memory", type=memory_limits, default={},
                        help="Go soft memory limits of the local API servers by role, e.g. "
                             "hub=3GiB,spoke=700MiB (10,000 x 16 outgrows 23.5 GiB without)")


def memory_limits(text: str) -> dict[str, str]:
    out = dict(part.split("=", 1) for part in text.split(",") if part)
    if not set(out) <= {"hub", "spoke", "ingress"}:
        raise argparse.ArgumentTypeError("roles are hub, spoke and ingress")
    return out


def run(args: argparse.Namespace) -> int:
    wanted = [(int(n), int(k)) for n, k in (c.split("x") for c in args.cases.split(","))]
    env = Environment(Path(args.dir), die_with_parent=True, log=log)
    started = time.perf_counter()
    try:
        env.down()
        env.up(spokes=max(k for _, k in wanted), memory_limits=args.apiserver_memory)
        result = asyncio.run(suite(env, args.budget, wanted, args.rtt))
        result["machine"]["api_server_memory_limits"] = args.apiserver_memory
    finally:
        env.down()
    result["total_s"] = time.perf_counter() - started
    result["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "scale.md").write_text(markdown(result, "scale.png"))
    chart(result, out / "scale.png")
    log(f"done in {result['total_s']:.0f} s; wrote {out}/scale.{{json,md,png}}")
    return 0

