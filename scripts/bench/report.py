"""Writes one run's result: OUT/<mode>.json, a Markdown report OUT/<mode>.md and a chart of
how cost grows OUT/<mode>.png (matplotlib).  When OUT/<mode>-before.json holds an earlier run
(the code before an optimisation), the report ends with a before/after table of the headline
figures.

``python scripts/bench/report.py OUT/<mode>.json`` renders the Markdown and the chart again
from a stored result."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from common import ratio
from floors import apply_ops_max


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu_model": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1),
            "python": sys.version.split()[0], "kernel": os.uname().release}


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if v < 10 else f"{v:.0f}"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows), ""]


def _machine(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    rows = [["CPU", m["cpu_model"]], ["cores", m["cores"]], ["RAM", f"{m['ram_gib']} GiB"],
            ["Python", m["python"]], ["kernel", m["kernel"]],
            ["kube-apiserver", m["kube_apiserver"]], ["etcd", m["etcd"]],
            ["kubectl", m["kubectl"]],
            ["API servers", "; ".join(
                f"{env} environment: {n} (hub, {n - 2} spokes, ingress) on {where} etcd"
                for env, n, where in (("main", m["api_servers"]["main"], "one"),
                                      ("idle", m["api_servers"]["idle"], "another")) if n)]]
    phases = ", ".join(f"{k} {v['seconds']:.0f} s (load {v['loadavg_start']:.1f}→"
                       f"{v['loadavg_end']:.1f})" + (" in the background" if k == "idle_windows"
                                                     else "") for k, v in r["phases"].items())
    code, end = r.get("code") or {"commit": "unknown", "uncommitted": []}, r.get("code_at_end")
    measured = f"hmls at commit {code['commit']}" + (
        f" with uncommitted changes ({', '.join(code['uncommitted'])})" if code["uncommitted"] else "")
    if end and end != code:
        measured += (f"; **the working tree changed during the run** (now {end['commit']}"
                     + (f", uncommitted {', '.join(end['uncommitted'])}" if end["uncommitted"] else "")
                     + "): controllers started later ran the newer code")
    return ["## Machine", "", *_table(["", ""], rows), f"Code measured: {measured}.", "",
            f"Run `{r['command']}` started {r['started']}, {r['total_s']:.0f} s in all "
            f"(environment up {r['environment_up_s']:.0f} s). Phases: {phases}.", "",
            "The machine is shared: other test runs may have been using its 2 cores; the 1-minute "
            "load average around each phase shows how busy it was. Nothing here is asserted.", ""]


def _floors(f: dict[str, Any]) -> list[str]:
    rows = []
    for c in ("c1", "c4", "c16"):
        raw, cli = f["apply"]["raw_http"][c], f["apply"]["cluster_client"][c]
        gen = f["apply"]["kubernetes_asyncio"][c]
        rows.append([raw["concurrency"], f"{raw['ops_per_s']:.0f}", _ms(raw["p50_ms"]),
                     _ms(raw["p99_ms"]), f"{cli['ops_per_s']:.0f}", _ms(cli["p50_ms"]),
                     _ms(cli["p99_ms"]), f"x{ratio(cli['p50_ms'], raw['p50_ms'])}",
                     f"{gen['ops_per_s']:.0f}", _ms(gen["p50_ms"]),
                     f"{raw['cpu_ms_per_op']:.2f} / {cli['cpu_ms_per_op']:.2f} / "
                     f"{gen['cpu_ms_per_op']:.2f}",
                     f"x{ratio(cli['cpu_ms_per_op'], gen['cpu_ms_per_op'])}"])
    other = [[k.replace("_", " "), _ms(f[k]["p50_ms"]), _ms(f[k]["p99_ms"]), f[k]["n"]]
             for k in ("hub_create", "hub_patch", "status_patch", "watch_delivery", "readyz")
             if k in f]
    return ["## 1. Floors (no controller running)", "",
            f"Server-side apply of a {f['object_bytes']} B MLService to one spoke, each apply a "
            f"real change; {f['ops_per_level']} applies per level.", "",
            *_table(["concurrency", "raw HTTP ops/s", "p50 ms", "p99 ms", "ClusterClient ops/s",
                     "p50 ms", "p99 ms", "client/raw p50", "kubernetes-asyncio ops/s", "p50 ms",
                     "caller CPU ms/apply: raw / client / k-a", "client/k-a CPU"], rows),
            "`kubernetes-asyncio` is its generated `CustomObjectsApi` on the same cluster: the path "
            "ClusterClient took before it owned its aiohttp session (the in-run \"before\"). "
            "Throughput and latency are bounded by the API server sharing the 2 cores; caller "
            "CPU per apply (the bench process, all threads) is what each path costs a "
            "controller.", "",
            *_table(["hub call", "p50 ms", "p99 ms", "n"], other),
            "`watch delivery` = from issuing a status patch to a hub watch seeing it (includes "
            "the patch). `readyz` = one health probe of a spoke (`GET /readyz`, what each "
            "cluster costs the controller every `--probe-interval` seconds).", ""]


def _apply(a: dict[str, Any], floors: dict[str, Any]) -> list[str]:
    ops = apply_ops_max(floors)
    rows = []
    for c in a["cases"]:
        s, lb, kc = c["create_to_fully_applied"], c["lower_bound"]["ms"], c["kubectl_sequential"]
        rows.append([c["spokes"], c["manifests"], _ms(s["p50_ms"]), _ms(s["p90_ms"]),
                     _ms(s["p99_ms"]), _ms(c["create_to_ready"]["p50_ms"]),
                     f"{_ms(lb)} (d={c['lower_bound']['depth']})", f"x{ratio(s['p50_ms'], lb)}",
                     _ms(c["spokes"] * c["manifests"] / ops * 1000),
                     f"{_ms(kc['p50_ms'])} / {_ms(kc['p90_ms'])}",
                     f"x{ratio(s['p50_ms'], kc['p50_ms'])}"])
    return ["## 2. Apply latency: create → FullyApplied seen on the hub", "",
            f"{a['runs']} runs per case (kubectl: {a['kubectl_runs']}); ms.", "",
            *_table(["spokes", "manifests", "p50", "p90", "p99", "→Ready p50", "lower bound",
                     "p50/LB", "k·m applies at best throughput", "kubectl p50 / p90", "hmls/kubectl"], rows),
            "Lower bound (floor p50s of this run): `LB = 2·watch + hub_patch + d·apply1` - the "
            "controller must see the create (a watch delivery), add its finalizer (a hub patch), "
            "apply d dependency groups one after the other (d=1 for 1 manifest, 3 for 5; "
            "clusters in parallel, so k does not appear) at the single-apply floor, and write "
            "status that a watch delivers. p50/LB above 1 is the controller's own work plus "
            "contention for the 2 cores. `k·m applies at best throughput` = the applies alone at "
            "the floors' best apply rate (one server, concurrency 16): not a bound, but where it "
            "nears the p50 the machine's 2 cores, not the chain of calls, set the time. "
            "kubectl = `kubectl apply -f` of the same manifests to "
            "each cluster in turn (real processes, client-side apply, warm discovery cache). "
            "→Ready includes the simulator's 0.5 s status delay.", ""]


def _rollout(p: dict[str, Any]) -> list[str]:
    o, first = p["step_overhead_ms"], p["first_step_ms"]
    rows = [["cluster i Done → cluster i+1 applied", _ms(o["p50_ms"]), _ms(o["p99_ms"]), o["n"],
             f"{_ms(p['lower_bound_ms'])} (x{ratio(o['p50_ms'], p['lower_bound_ms'])})"],
            ["spec change → first cluster applied", _ms(first["p50_ms"]), _ms(first["p99_ms"]),
             first["n"], ""]]
    return ["## Progressive rollout step overhead", "",
            *_table(["", "p50 ms", "p99 ms", "n", "lower bound (p50/LB)"], rows),
            f"{p['revisions']} revisions over {p['spokes']} spokes, maxConcurrency 1, soakSeconds "
            "1, no traffic. LB = status patch + apply + watch (floor p50s of this run).", ""]


def _propagation(p: dict[str, Any]) -> list[str]:
    s, storm = p["spoke_status_to_hub"], p["storm"]
    seen = storm["all_not_ready_seen"]
    rows = [["one spoke flips Ready=False → hub Ready=False", _ms(s["p50_ms"]), _ms(s["p99_ms"]),
             s["n"], f"{_ms(p['lower_bound_ms'])} (x{ratio(s['p50_ms'], p['lower_bound_ms'])})",
             f"{_ms(p['p99_target_ms'])} (x{ratio(s['p99_ms'], p['p99_target_ms'])})"]]
    if seen:
        rows.append([f"{storm['spokes']} spokes flip at once → hub shows all {storm['spokes']}",
                     _ms(seen["p50_ms"]), _ms(seen["p99_ms"]), seen["n"], "", ""])
    return ["## 3. Status propagation", "",
            *_table(["", "p50 ms", "p99 ms", "n", "lower bound (p50/LB)", "p99 target (p99/target)"],
                    rows),
            f"The controller gathers spoke changes for its batch window "
            f"({p['batch_window_ms']:.0f} ms, `--batch-window`) before reconciling. Lower bound "
            "LB = window + 2·watch; the issue's p99 target = window + 3·watch + status patch "
            "(floor p50s of this run)." + (
                f" One reconcile of this HyperMLService took {p['reconcile_mean_ms']:.1f} ms on "
                "average (`hmls_reconcile_duration_seconds`): part of what p50 exceeds LB by."
                if "reconcile_mean_ms" in p else ""), "",
            *([f"Drift: a merge patch of `spec.default` on a spoke → the value hmls applied "
               f"is back: p50 {_ms(p['drift_restored']['p50_ms'])} ms, p99 "
               f"{_ms(p['drift_restored']['p99_ms'])} ms over {p['drift_restored']['n']} "
               f"patches (lower bound 2·watch + apply "
               f"{_ms(p['drift_lower_bound_ms'])} ms).", ""] if "drift_restored" in p else []),
            f"Hub status writes per single flip and its restoration: "
            f"{p['status_writes_per_single_flip']:.2f} (ideal 2).", "",
            f"{storm['spokes']} spokes flipping at once, then restored by the simulator "
            f"({storm['rounds']} rounds): hub status writes per round {storm['status_writes']} "
            f"(mean {storm['status_writes_mean']:.1f}; ideal {storm['ideal_writes']}, one per "
            f"spoke event {storm['naive_writes']}).", ""]


def _idle(i: dict[str, Any]) -> list[str]:
    rows = [[c, f"{v['mutating']} / {v['baseline_mutating']} / {v['controller_mutating']}",
             f"{v['non_lease']} / {v['baseline_non_lease']} / {v['controller_non_lease']}",
             f"{v['reads']} / {v['baseline_reads']} / {v['controller_reads']}"]
            for c, v in i["servers"].items()]
    c, r = i["controller"], i["restart"]
    writes = sorted({w for v in i["servers"].values() for w in v["writes"]})
    return ["## 4. Idle cost", "",
            f"On the idle environment: {i['crs']} HyperMLServices x {i['spokes']} spokes, "
            f"settled; {i['window_s']:.0f} s idle with the controller, then the same servers "
            "for the same time without it (baseline). These windows ran while the other "
            "measurements ran on the main environment; the idle environment's processes used "
            f"{i['environment_cpu_s']:.1f} CPU s over both windows "
            f"({i['environment_cpu_pct_of_one_core']:.1f}% of one core), the background load it "
            "added to them.", "",
            *_table(["server", "mutating: with controller / baseline / difference",
                     "of which not lease renewals", "GET+LIST"], rows),
            f"Mutating requests with the controller minus the baseline, all servers: "
            f"**{i['controller_mutating_total']}** in {i['window_s']:.0f} s; leaving out the API "
            "servers' own lease renewals (a PUT every 10 s each, which the controller never makes "
            "without --leader-elect; their count moves by one at a window's edge): "
            f"**{i['controller_non_lease_total']}**. Written while the controller ran: "
            f"{', '.join(writes) or 'nothing'}. WATCH requests are left out of the reads: the "
            "API server counts one when it ends, not in the window it covered.", "",
            f"Controller over the window: {c['cpu_s']:.2f} CPU s "
            f"({c['cpu_pct_of_one_core']:.2f}% of one core), RSS {c['rss_mb_start']:.0f} → "
            f"{c['rss_mb_end']:.0f} MB (peak {c['peak_rss_mb']:.0f} MB); its counters moved by "
            f"{c['counters_delta']}.", "",
            f"Restart on the settled state: **{r['applies_resent']} applies re-sent** (target 0; "
            f"{r['unchanged']} unchanged), {r['status_writes']} status writes, "
            f"{r['reconciles']} reconciles, settled in {r['settle_s']:.1f} s using "
            f"{r['cpu_s']:.1f} CPU s (peak RSS {r['peak_rss_mb']:.0f} MB); writes during the "
            f"restart other than lease renewals: {r['non_lease_writes']} (all: "
            f"{r['writes'] or 'none'}).", ""]


def _scale(s: dict[str, Any], chart: str, quick: bool) -> list[str]:
    cost, load = [], []
    for c in s["cases"]:
        req, ctl = c["requests"], c["controller"]
        cost.append([c["crs"], c["spokes"], f"{c['startup_s']:.1f}",
                     f"{c['to_fully_applied_s']:.1f}",
                     f"{c['apply_floor_s']:.1f} (x{ratio(c['to_fully_applied_s'], c['apply_floor_s'])})",
                     f"{c['to_ready_s']:.1f}", f"{c['per_cr_ms']:.1f}", f"{c['cpu_s']['settled']:.1f}",
                     f"{c['cpu_per_cr_ms']:.1f}", f"{c['peak_rss_mb']:.0f}"])
        load.append([c["crs"], c["spokes"], f"{req['hub']['total']} ({req['hub']['mutating']})",
                     f"{req['spokes']['total']} ({req['spokes']['mutating']}; simulator "
                     f"{req['spokes']['simulator']})", ctl["reconciles"], ctl["applied"],
                     ctl["status_writes"], f"{c['servers_cpu_s']:.0f}",
                     f"{c['machine_busy_pct']:.0f}%"])
    out = ["## 5. Scale: cold start to all FullyApplied", "",
           *_table(["CRs", "spokes", "startup s", "→FullyApplied s", "apply floor s", "→Ready s",
                    "ms/CR", "CPU s", "CPU ms/CR", "peak RSS MB"], cost),
           "Clock from the controller's spawn; startup = until its /readyz answers. apply floor = "
           "CRs·spokes / the best ClusterClient apply throughput of the floors. ms/CR and CPU "
           "ms/CR: to FullyApplied, after startup. CPU s and peak RSS: at settled (after Ready).",
           "",
           *_table(["CRs", "spokes", "hub requests (mutating)", "spoke requests (mutating)",
                    "reconciles", "applies", "status writes", "servers' CPU s",
                    "machine busy"], load),
           "Requests from spawn to settled, from apiserver_request_total; on spokes the "
           "simulator's status patches and reads are in there (counted apart). servers' CPU s = "
           "the environment's API servers, etcd and simulator over the case; machine busy = "
           "both cores, everything on the machine included (other users too).", ""]
    for key, g in s["growth"].items():
        if not key.startswith("k"):
            continue
        out.append(f"- {key[1:]} spokes: time ≈ {g['time_vs_crs']['intercept']:.1f} s + "
                   f"{g['time_vs_crs']['slope'] * 1000:.1f} ms·CRs; CPU ≈ "
                   f"{g['cpu_vs_crs']['intercept']:.1f} s + {g['cpu_vs_crs']['slope'] * 1000:.1f} "
                   f"ms·CRs; peak RSS ≈ {g['peak_rss_vs_crs']['intercept']:.0f} MB + "
                   f"{g['rss_per_cr_kb']:.1f} KB·CRs; per-CR time x{g['per_cr_time_growth']:.2f}, "
                   f"per-CR CPU x{g['per_cr_cpu_growth']:.2f} from smallest to largest: "
                   + ("**super-linear (> 1.5x)**" if g["superlinear"] else "not super-linear"))
    if quick:
        out.append("- quick sizes take a few seconds per case: their growth ratios are mostly "
                   "noise; see the full run")
    pc = s["growth"]["rss_per_cluster_mb"]
    if pc["mb"] is not None:
        out.append(f"- memory per cluster at {pc['crs']} CRs: {pc['mb']:.1f} MB (peak RSS "
                   "difference between spoke counts, per spoke)")
    out += ["", f"![how cost grows]({chart})", ""]
    return out


def far_away(r: dict[str, Any]) -> list[str]:
    """The round-trip cases of one size (``scale.far_away``)."""
    rows = [[c["rtt_ms"], f"{c['to_fully_applied_s']:.1f}", f"{c['latency_floor_s']:.1f}",
             f"x{c['wall_over_floor']}", f"x{c['over_loopback']}", c["controller"]["reconciles"],
             f"{c['cpu_s']['settled']:.0f}"] for c in r["cases"]]
    flags = " ".join(r["controller_flags"]) or "the default flags"
    return [f"## Far-away spokes: {r['crs']} CRs x {r['spokes']} spokes at each round trip", "",
            *_table(["round trip ms", "→FullyApplied s", "latency floor s", "wall/floor",
                     "wall/loopback", "reconciles", "CPU s"], rows),
            f"Cold start as in the scale cases, each CR the seed's {r['manifests_per_cr']} "
            f"manifests, the controller with {flags}, every spoke behind a proxy in the bench "
            "process that delays each direction by half the round trip without serialising "
            "the bytes (`FaultProxy` mode `latency`; a new connection waits one more round "
            "trip, its handshake); 0 ms is the same proxy on loopback, the baseline of "
            "wall/loopback. Latency floor = request floor (every write: CRs x spokes x "
            f"manifests applies, a finalizer patch and a status write per CR, at "
            f"{r['write_ops_per_s']:.0f} writes/s, the floors' best) + {r['round_trips']} "
            "sequential round trips x the round trip (a connection: TCP and TLS handshakes, "
            "2; discovery with the namespace read beside it, 1; the dependency groups Secret "
            "→ MLServiceRuntime → MLService, 3; the hub is on the controller's side).", ""]


def _headline(r: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """Figure name -> (value, unit) for the before/after table; None where not measured."""
    out: dict[str, tuple[float | None, str]] = {}
    cli = r["floors"]["apply"]["cluster_client"]
    for c in ("c1", "c16"):
        out[f"client SSA throughput, concurrency {c[1:]}"] = (cli[c]["ops_per_s"], "ops/s")
    for case in (r.get("apply") or {}).get("cases", []):
        out[f"create → FullyApplied p50, {case['spokes']} spokes x {case['manifests']}"] = (
            case["create_to_fully_applied"]["p50_ms"], "ms")
    if "rollout" in r:
        out["rollout step overhead p50"] = (r["rollout"]["step_overhead_ms"]["p50_ms"], "ms")
    if "propagation" in r:
        p = r["propagation"]
        out["spoke status → hub p50"] = (p["spoke_status_to_hub"]["p50_ms"], "ms")
        out["spoke status → hub p99"] = (p["spoke_status_to_hub"]["p99_ms"], "ms")
        out[f"hub status writes, {p['storm']['spokes']} spokes flipping at once"] = (
            p["storm"]["status_writes_mean"], "writes")
    for c in (r.get("scale") or {}).get("cases", []):
        what = f"{c['crs']} CRs x {c['spokes']} spokes"
        out[f"cold start → all FullyApplied, {what}"] = (c["to_fully_applied_s"], "s")
        out[f"controller CPU to settled, {what}"] = (c["cpu_s"]["settled"], "CPU s")
        out[f"reconciles to settled, {what}"] = (c["controller"]["reconciles"], "")
        out[f"peak RSS, {what}"] = (c["peak_rss_mb"], "MB")
    if "idle" in r:
        out["idle: controller writes"] = (r["idle"]["controller_non_lease_total"], "")
        out["idle: controller CPU"] = (r["idle"]["controller"]["cpu_s"], "CPU s")
        out["restart: applies re-sent"] = (r["idle"]["restart"]["applies_resent"], "")
        out["restart: controller CPU to settled"] = (r["idle"]["restart"]["cpu_s"], "CPU s")
    return out


def _before_after(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    old, new = _headline(before), _headline(after)
    def fig(v: float | None, unit: str) -> str:
        return f"{v:.0f}" if v is not None and not unit else f"{_ms(v)} {unit}"

    rows = []
    for name, (value, unit) in new.items():
        if name in old:
            was = old[name][0]
            rows.append([name, fig(was, unit), fig(value, unit),
                         f"x{ratio(value, was)}" if value and was else "-"])
    return ["## 7. Before and after", "",
            f"The same suite on the code before the optimisations (commit "
            f"{before['code']['commit']}, run {before['started']}, stored as "
            f"`{before['mode']}-before.json`) and now. Both runs on this machine, each with its "
            "own load; the floors of each run are in its own report. Timings of two runs can "
            "differ by the load alone: `ab.md` (`make bench-ab`) runs both controllers "
            "alternately on the same servers.", "",
            *_table(["figure", "before", "after", "after/before"], rows)]


def markdown(r: dict[str, Any], chart: str,
             before: dict[str, Any] | None = None) -> str:
    lines = [f"# hmls benchmarks ({r['mode']})", "",
             "Generated by `scripts/bench/run.py`" + (" --quick" if r["mode"] == "quick" else "")
             + " against real kube-apiserver and etcd processes on this machine (loopback).", "",
             *_machine(r), *_floors(r["floors"])]
    if "apply" in r:
        lines += _apply(r["apply"], r["floors"])
    if "propagation" in r:
        lines += _propagation(r["propagation"])
    if "rollout" in r:
        lines += _rollout(r["rollout"])
    if "idle" in r:
        lines += _idle(r["idle"])
    if "scale" in r:
        lines += _scale(r["scale"], chart, r["mode"] == "quick")
    if "rtt" in r:
        lines += far_away(r["rtt"])
    if before is not None:
        lines += _before_after(before, r)
    return "\n".join(lines).rstrip() + "\n"


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    m = r["machine"]
    fig.suptitle(f"hmls benchmarks ({r['mode']}) — {m['cpu_model']}, {m['cores']} cores, "
                 f"kube-apiserver {m['kube_apiserver']}", fontsize=10)
    if "scale" in r:
        cases = r["scale"]["cases"]
        for k in sorted({c["spokes"] for c in cases}):
            mine = sorted((c for c in cases if c["spokes"] == k), key=lambda c: c["crs"])
            xs = [c["crs"] for c in mine]
            g = r["scale"]["growth"][f"k{k}"]
            label = f"{k} spoke{'s' if k > 1 else ''}"
            color = None
            for ax, ys, fit in (
                    (axes[0][0], [c["to_fully_applied_s"] for c in mine], g["time_vs_crs"]),
                    (axes[0][1], [c["cpu_s"]["settled"] for c in mine], g["cpu_vs_crs"]),
                    (axes[1][0], [c["peak_rss_mb"] for c in mine], g["peak_rss_vs_crs"])):
                color = ax.plot(xs, ys, "o-", color=color, label=label)[0].get_color()
                ax.plot(xs, [fit["intercept"] + fit["slope"] * x for x in xs], ":", color=color,
                        alpha=0.6)
            axes[0][0].plot(xs, [c["apply_floor_s"] for c in mine], "--", color=color, alpha=0.5,
                            label=f"apply-throughput floor, {label}")
        for ax, title in ((axes[0][0], "cold start → all FullyApplied (s)"),
                          (axes[0][1], "controller CPU to settle (s)"),
                          (axes[1][0], "controller peak RSS (MB)")):
            ax.set_title(title, fontsize=10)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("HyperMLServices")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    if "apply" in r:
        ax = axes[1][1]
        cases = r["apply"]["cases"]
        for mcount in sorted({c["manifests"] for c in cases}):
            mine = [c for c in cases if c["manifests"] == mcount]
            xs = [c["spokes"] for c in mine]
            line = ax.plot(xs, [c["create_to_fully_applied"]["p50_ms"] for c in mine], "o-",
                           label=f"hmls p50, {mcount} manifest{'s' if mcount > 1 else ''}")[0]
            ax.fill_between(xs, [c["create_to_fully_applied"]["p50_ms"] for c in mine],
                            [c["create_to_fully_applied"]["p99_ms"] for c in mine],
                            color=line.get_color(), alpha=0.15)
            ax.plot(xs, [c["kubectl_sequential"]["p50_ms"] for c in mine], "s--",
                    color=line.get_color(), alpha=0.7, label=f"kubectl p50, {mcount}")
            ax.plot(xs, [c["lower_bound"]["ms"] for c in mine], ":", color=line.get_color(),
                    label=f"lower bound, {mcount}")
        ax.set_title("create → FullyApplied (ms; band p50-p99)", fontsize=10)
        ax.set_xlabel("spokes")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, r: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    mode = r["mode"]
    paths = [out / f"{mode}.json", out / f"{mode}.md", out / f"{mode}.png"]
    paths[0].write_text(json.dumps(r, indent=2) + "\n")
    stored_before = out / f"{mode}-before.json"
    before = json.loads(stored_before.read_text()) if stored_before.exists() else None
    paths[1].write_text(markdown(r, paths[2].name, before))
    if "scale" in r or "apply" in r:  # what the chart draws
        chart(r, paths[2])
    else:
        paths.remove(paths[2])
    print(paths[1].read_text())
    return paths


if __name__ == "__main__":
    stored = Path(sys.argv[1])
    write(stored.parent, json.loads(stored.read_text()))
