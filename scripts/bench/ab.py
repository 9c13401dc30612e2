"""Before/after in one process run, alternating the controller of an earlier revision
(``--base``, exported with ``git archive``) and this checkout's:

  apply   create → FullyApplied on the hub (apply_latency.py's ``sample``) for --spokes
          spokes x 1 and 5 manifests, --apply-runs creates per variant, round and case, each
          variant's controller in a hub namespace of its own; p50/p90 of all its rounds.
  scale   the scale phase's cold start of --crs HyperMLServices x --spokes spokes: wall time
          to all FullyApplied, controller CPU seconds (spawn → settled), CPU by thread (the
          event loop vs the executor threads), reconciles, status writes, requests, peak RSS;
          medians over the rounds.

Both controllers meet the same API servers, the same machine load and the same objects; the
order alternates every round, so that a drift in load hits both alike.  Ratios are after /
before.  Writes OUT/NAME.json and OUT/NAME.md (``--name``, default ab).

  python scripts/bench/bench.py ab [--base REV] [--only apply,scale] [--crs 1000] [--spokes 4]
                             [--per-cr 1] [--rounds 3] [--apply-runs 30] [--name ab]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scale
from apply_latency import MANIFESTS, sample
from common import REPO, Bench, HubWatch, log, pct, ratio
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller
from report import loadavg, machine

BASE = "4b52e73"  # the last commit before issue 7's controller changes


def _export(rev: str, into: Path) -> str:
    """``hmls/`` as of rev, unpacked under into; returns the full commit id."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", commit, "hmls"], capture_output=True,
                         check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return commit


def _figures(c: dict[str, Any]) -> dict[str, float]:
    threads = c["controller_threads_cpu_s"]
    return {"to_fully_applied_s": c["to_fully_applied_s"], "cpu_s": c["cpu_s"]["settled"],
            "cpu_to_fully_applied_s": c["cpu_s"]["at_fully_applied"] - c["cpu_s"]["at_ready"],
            "event_loop_cpu_s": threads["main"], "executor_threads_cpu_s": threads["other_threads"],
            "threads": threads["threads"], "reconciles": c["controller"]["reconciles"],
            "status_writes": c["controller"]["status_writes"],
            "hub_requests": c["requests"]["hub"]["total"],
            "spoke_requests": c["requests"]["spokes"]["total"], "peak_rss_mb": c["peak_rss_mb"]}


def _orders(count: int) -> list[tuple[int, str]]:
    """(round, variant) in the order they run: before first in even rounds, after in odd."""
    return [(r, v) for r in range(count)
            for v in (("before", "after") if r % 2 == 0 else ("after", "before"))]


async def apply_rounds(b: Bench, base_src: Path, k: int, count: int, runs: int
                       ) -> dict[str, dict[str, list[float]]]:
    """Seconds from create to FullyApplied, by variant and manifest count, all rounds pooled."""
    clusters = b.spokes[:k]
    out: dict[str, dict[str, list[float]]] = {v: {str(m): [] for m in MANIFESTS}
                                              for v in ("before", "after")}
    for r, variant in _orders(count):
        ns = f"ab-apply-{variant}{r}"
        await b.namespace(ns, ["hub", *clusters])
        watcher = await HubWatch(b.hub, ns).start()
        ctl = Controller(b.env, namespaces=[ns], name=f"controller-{ns}",
                         source=base_src if variant == "before" else None)
        ctl.start(wait=False)
        try:
            await ctl.ready()
            for m in MANIFESTS:
                applied, _ = await sample(b, watcher, clusters, m, runs, prefix=f"{variant}{r}")
                out[variant][str(m)] += applied
                log(f"apply round {r + 1} {variant} {k} spokes x {m}: p50 "
                    f"{pct(applied, 50) * 1000:.0f} ms, load {loadavg():.1f}")
        finally:
            await ctl.halt()
            await watcher.stop()
        await b.clean(ns, clusters)
    return out


async def rounds(b: Bench, base_src: Path, n: int, k: int, count: int, per_cr: int
                 ) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r, variant in _orders(count):
        c = await scale.case(b, n, k, source=base_src if variant == "before" else None,
                             tag=f"{variant}{r}", per_cr=per_cr)
        runs[variant].append(_figures(c))
        log(f"round {r + 1} {variant}: FullyApplied in {c['to_fully_applied_s']:.1f} s, "
            f"CPU {c['cpu_s']['settled']:.2f} s (event loop "
            f"{c['controller_threads_cpu_s']['main']:.2f}, executor "
            f"{c['controller_threads_cpu_s']['other_threads']:.2f}), "
            f"{c['controller']['reconciles']:.0f} reconciles, load {loadavg():.1f}")
    return runs


def _row(label: str, before: float, after: float, fmt: Callable[[float], str]) -> str:
    return f"| {label} | {fmt(before)} | {fmt(after)} | x{ratio(after, before)} |"


def _apply_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    for m in MANIFESTS:
        for p in (50, 90):
            before, after = (pct(result["apply"][v][str(m)], p) * 1000 for v in ("before", "after"))
            rows.append(_row(f"create → FullyApplied p{p}, {result['spokes']} spokes x {m}, ms",
                             before, after, lambda v: f"{v:.0f}"))
    return rows


def _scale_rows(result: dict[str, Any]) -> list[str]:
    def median(variant: str, key: str) -> float:
        return float(statistics.median(r[key] for r in result["scale"][variant]))

    names: list[tuple[str, str, Callable[[float], str]]] = [
        ("to_fully_applied_s", "cold start → all FullyApplied, s", lambda v: f"{v:.1f}"),
        ("cpu_s", "controller CPU, spawn → settled, s", lambda v: f"{v:.2f}"),
        ("cpu_to_fully_applied_s", "controller CPU, ready → all FullyApplied, s", lambda v: f"{v:.2f}"),
        ("event_loop_cpu_s", "of which the event loop's thread, s", lambda v: f"{v:.2f}"),
        ("executor_threads_cpu_s", "of which executor threads, s", lambda v: f"{v:.2f}"),
        ("threads", "threads", lambda v: f"{v:.0f}"),
        ("reconciles", "reconciles", lambda v: f"{v:.0f}"),
        ("status_writes", "status writes", lambda v: f"{v:.0f}"),
        ("hub_requests", "hub requests", lambda v: f"{v:.0f}"),
        ("spoke_requests", "spoke requests (simulator included)", lambda v: f"{v:.0f}"),
        ("peak_rss_mb", "peak RSS, MB", lambda v: f"{v:.0f}"),
    ]
    return [_row(f"{label} ({result['crs']} CRs)", median("before", key), median("after", key), fmt)
            for key, label, fmt in names]


def _table(result: dict[str, Any]) -> str:
    phases = []
    if "apply" in result:
        phases.append(f"apply latency: {result['apply_runs']} creates per variant, round and "
                      "case, one at a time (p50/p90 over all rounds)")
    if "scale" in result:
        phases.append(f"cold start of {result['crs']} HyperMLServices x {result['spokes']} "
                      "spokes (medians over the rounds)")
    rows = (_apply_rows(result) if "apply" in result else []) + (
        _scale_rows(result) if "scale" in result else [])
    return "\n".join([
        "# Before/after in one run", "",
        f"`{result['command']}`, started {result['started']}, {result['total_s']:.0f} s; "
        f"{'; '.join(phases)}; {result['rounds']} rounds alternating the order. before = "
        f"`hmls/` of {result['base'][:7]}; after = this checkout at {result['head']}"
        + (f" with uncommitted changes under hmls/ ({', '.join(result['uncommitted'])})"
           if result["uncommitted"] else "") + ".", "",
        f"Machine: {result['machine']['cpu_model']}, {result['machine']['cores']} cores, "
        f"Python {result['machine']['python']}; 1-minute load average "
        f"{result['loadavg_start']:.1f} at the start, {result['loadavg_end']:.1f} at the end.", "",
        "| figure | before | after | after/before |", "|---|---|---|---|", *rows, "",
        f"Every round's figures are in `{result['name']}.json`. Nothing is asserted.", ""])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=BASE, help=f"the 'before' revision (default {BASE})")
    parser.add_argument("--only", default="apply,scale", help="comma-separated: apply, scale")
    parser.add_argument("--crs", type=int, default=1000)
    parser.add_argument("--spokes", type=int, default=4)
    parser.add_argument("--per-cr", type=int, default=1,
                        help="manifests per CR in the scale rounds (3: the seed's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply-runs", type=int, default=30)
    parser.add_argument("--dir", default=str(REPO / ".hmls-env" / "bench-ab"))
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks"))
    parser.add_argument("--name", default="ab", help="results go to OUT/NAME.{json,md}")


def run(args: argparse.Namespace) -> int:
    only = {p for p in args.only.split(",") if p}
    if not only or only - {"apply", "scale"}:
        raise SystemExit("--only takes apply, scale or both")
    started = time.perf_counter()
    root = Path(args.dir)
    env = Environment(root / "env", die_with_parent=True, log=log)
    env.down()
    base_src = root / "base"
    base = _export(args.base, base_src)

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,
                              check=False).stdout.strip()

    result: dict[str, Any] = {
        "command": " ".join(["bench.py", "ab", *(f"--{k.replace('_', '-')} {v}"
                                       for k, v in vars(args).items()
                                       if k not in ("dir", "out", "run", "command"))]),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
        "base": base, "head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "hmls").splitlines(),
        "crs": args.crs, "spokes": args.spokes, "per_cr": args.per_cr, "rounds": args.rounds,
        "apply_runs": args.apply_runs}

    async def body() -> None:
        b = Bench(env, quick=False)
        try:
            await b.open()
            await b.join_spokes()
            result["loadavg_start"] = loadavg()
            if "apply" in only:
                result["apply"] = await apply_rounds(b, base_src, args.spokes, args.rounds,
                                                     args.apply_runs)
            if "scale" in only:
                result["scale"] = await rounds(b, base_src, args.crs, args.spokes, args.rounds,
                                               args.per_cr)
            result["loadavg_end"] = loadavg()
        finally:
            await b.close()

    try:
        env.up(spokes=args.spokes)
        asyncio.run(body())
    finally:
        env.down()
    result["total_s"] = time.perf_counter() - started
    result["name"] = args.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(_table(result))
    print((out / f"{args.name}.md").read_text())
    return 0

