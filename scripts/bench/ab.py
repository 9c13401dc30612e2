"""Before/after in one process run: the scale phase's cold start, alternating the controller
of an earlier revision (``--base``, exported with ``git archive``) and this checkout's.

Both controllers meet the same API servers, the same machine load and the same objects; the
order alternates every round, so that a drift in load hits both alike.  Per variant: wall
time to all FullyApplied, controller CPU seconds (spawn → settled), CPU by thread (the event
loop vs the executor threads), reconciles, status writes, requests and peak RSS; medians over
the rounds and their ratio (after / before).  Writes OUT/ab.json and OUT/ab.md.

  python scripts/bench/ab.py [--base REV] [--crs 1000] [--spokes 4] [--rounds 3]
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
from common import REPO, Bench, log, ratio, stop_env
from report import loadavg, machine

from hmls.devenv.environment import Environment

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


async def rounds(b: Bench, base_src: Path, n: int, k: int, count: int) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(count):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for variant in order:
            c = await scale.case(b, n, k, source=base_src if variant == "before" else None,
                                 tag=f"{variant}{r}")
            runs[variant].append(_figures(c))
            log(f"round {r + 1} {variant}: FullyApplied in {c['to_fully_applied_s']:.1f} s, "
                f"CPU {c['cpu_s']['settled']:.2f} s (event loop "
                f"{c['controller_threads_cpu_s']['main']:.2f}, executor "
                f"{c['controller_threads_cpu_s']['other_threads']:.2f}), "
                f"{c['controller']['reconciles']:.0f} reconciles, load {loadavg():.1f}")
    return runs


def _table(result: dict[str, Any]) -> str:
    def median(variant: str, key: str) -> float:
        return float(statistics.median(r[key] for r in result["runs"][variant]))

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
    rows = [f"| {label} | {fmt(median('before', key))} | {fmt(median('after', key))} | "
            f"x{ratio(median('after', key), median('before', key))} |" for key, label, fmt in names]
    return "\n".join([
        "# Before/after in one run", "",
        f"`{result['command']}`, started {result['started']}, {result['total_s']:.0f} s; "
        f"{result['crs']} HyperMLServices x {result['spokes']} spokes, cold start, "
        f"{result['rounds']} rounds alternating the order. before = `hmls/` of "
        f"{result['base'][:7]}; after = this checkout at {result['head']}"
        + (f" with uncommitted changes under hmls/ ({', '.join(result['uncommitted'])})"
           if result["uncommitted"] else "") + ".", "",
        f"Machine: {result['machine']['cpu_model']}, {result['machine']['cores']} cores, "
        f"Python {result['machine']['python']}; 1-minute load average "
        f"{result['loadavg_start']:.1f} at the start, {result['loadavg_end']:.1f} at the end.", "",
        "Medians over the rounds:", "",
        "| figure | before | after | after/before |", "|---|---|---|---|", *rows, "",
        "Every round's figures are in `ab.json`. Nothing is asserted.", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=BASE, help=f"the 'before' revision (default {BASE})")
    parser.add_argument("--crs", type=int, default=1000)
    parser.add_argument("--spokes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=str(REPO / ".hmls-env" / "bench-ab"))
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks"))
    args = parser.parse_args()
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
        "command": " ".join(["ab.py", *(f"--{k} {v}" for k, v in vars(args).items()
                                       if k not in ("dir", "out"))]),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
        "base": base, "head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "hmls").splitlines(),
        "crs": args.crs, "spokes": args.spokes, "rounds": args.rounds}

    async def body() -> None:
        b = Bench(env, quick=False)
        try:
            await b.open()
            await b.join_spokes()
            result["loadavg_start"] = loadavg()
            result["runs"] = await rounds(b, base_src, args.crs, args.spokes, args.rounds)
            result["loadavg_end"] = loadavg()
        finally:
            await b.close()

    try:
        env.up(spokes=args.spokes)
        asyncio.run(body())
    finally:
        stop_env(env)
    result["total_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ab.md").write_text(_table(result))
    print((out / "ab.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
