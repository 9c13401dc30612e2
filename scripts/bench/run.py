"""hmls benchmark suite against real local API servers (``make bench`` / ``make bench-quick``).

A local environment (etcd, a kube-apiserver each for the hub, 8 spokes (4 with --quick) and
the ingress cluster, the MLService simulator) is started, the spokes are joined, and the
measurements run one after the other:

  floors         single API calls: SSA (raw HTTP, ClusterClient, kubernetes-asyncio;
                 concurrency 1/4/16),
                 hub create / patch / status patch, watch delivery      (floors.py)
  apply          create → FullyApplied, 1/4/8 (quick 1/4) spokes x 1/5 manifests, lower
                 bound, kubectl
                                                                        (apply_latency.py)
  propagation    spoke status → hub, and all spokes flipping at once     (propagation.py)
  rollout        progressive rollout step overhead: one cluster Done → the next one's
                 apply, over every spoke                               (rollout.py)
  scale          cold start for N CRs x k spokes, growth fits           (scale.py)
  idle           writes and CPU while idle vs a no-controller baseline, restart (idle.py),
                 on a second environment (hub, 4 spokes, ingress): it is set up first, its
                 two T-long windows run while the others run, its restart comes last
  rtt            far-away spokes: the cold start of 300 CRs (the seed's 3 manifests) x 4
                 spokes behind a latency proxy at each --rtt round trip (0, 50, 200 ms),
                 against a latency floor and the 0 ms case                  (scale.far_away)

Results go to OUT/<mode>.json, OUT/<mode>.md and OUT/<mode>.png (mode: full or quick).
Nothing is asserted: figures are printed and written, with ratios against the floors and
baselines of the same run.  Timings on a shared machine are noisy; the report records the
load average around each phase.

  python scripts/bench/bench.py suite [--quick] [--dir DIR] [--out docs/benchmarks] [--only a,b]
                             [--rtt 0,50,200]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import apply_latency
import floors
import idle
import propagation
import rollout
import scale
from common import NAMESPACE, REPO, Bench, log, rtt_list
from hmls_devenv import binaries
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller
from report import loadavg, machine, write

PHASES = ("floors", "apply", "propagation", "rollout", "scale", "idle", "rtt")
SPOKES = 8
QUICK_SPOKES = 4  # fewer servers to start and no 8-spoke apply cases: the 3-minute budget
RTT_CASE = (300, 4)  # CRs x spokes; the probe


async def _phase(result: dict[str, Any], name: str, body: Callable[[], Awaitable[Any]]) -> Any:
    load0, t0 = loadavg(), time.perf_counter()
    log(f"--- {name} (load average {load0:.2f})")
    value = await body()
    result["phases"][name] = {"seconds": time.perf_counter() - t0, "loadavg_start": load0,
                              "loadavg_end": loadavg()}
    return value


def _code() -> dict[str, Any]:
    """Which hmls the controllers ran: the commit and any uncommitted changes under hmls/."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "hmls").splitlines()}


def _kubectl_version() -> str:
    out = subprocess.run(["kubectl", "version", "--client", "-o", "yaml"], capture_output=True,
                         text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.strip().startswith("gitVersion")), "unknown")


async def suite(main_env: Environment, idle_env: Environment | None, quick: bool,
                only: set[str], rtts: list[int]) -> dict[str, Any]:
    b = Bench(main_env, quick)
    ib = Bench(idle_env, quick) if idle_env else None
    benches = [x for x in (b, ib) if x]
    background: asyncio.Task[dict[str, Any]] | None = None
    try:
        for x in benches:
            await x.open()
            await x.join_spokes()
        result: dict[str, Any] = {
            "mode": "quick" if quick else "full",
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {**machine(),
                        "kube_apiserver": (await b.hub.version()).get("gitVersion"),
                        "etcd": binaries.ETCD_VERSION, "kubectl": _kubectl_version(),
                        "api_servers": {"main": len(main_env.state().clusters),
                                        "idle": len(idle_env.state().clusters) if idle_env else 0}},
            "code": _code(), "phases": {}}
        if ib:  # set up first, then let the idle windows run under the other measurements
            ctl = await _phase(result, "idle_setup", lambda: idle.prepare(ib))
            background = asyncio.create_task(_phase(result, "idle_windows",
                                                    lambda: idle.windows(ib, ctl)))
        fl = result["floors"] = await _phase(result, "floors", lambda: floors.run(b))
        if only & {"apply", "propagation", "rollout"}:
            ctl = Controller(b.env, namespaces=[NAMESPACE])
            ctl.start(wait=False)
            await ctl.ready()
            if "apply" in only:
                result["apply"] = await _phase(result, "apply", lambda: apply_latency.run(b, fl))
            if "propagation" in only:
                result["propagation"] = await _phase(result, "propagation",
                                                     lambda: propagation.run(b, ctl, fl))
            if "rollout" in only:
                result["rollout"] = await _phase(result, "rollout",
                                                 lambda: rollout.run(b, ctl, fl))
            await ctl.halt()
            await b.clean(NAMESPACE, b.spokes)
            await b.clean(apply_latency.KUBECTL_NS, b.spokes, owned_only=False)
        if "scale" in only:
            result["scale"] = await _phase(result, "scale", lambda: scale.run(b, fl))
        if "rtt" in only:
            result["rtt"] = await _phase(result, "rtt", lambda: scale.far_away(
                b, *RTT_CASE, rtts, floors.apply_ops_max(fl)))
        if ib and background:
            log("waiting for the idle windows to end")
            result["idle"] = await background
            result["idle"]["restart"] = await _phase(result, "idle_restart",
                                                     lambda: idle.restart(ib))
        result["code_at_end"] = _code()
        return result
    finally:
        if background and not background.done():
            background.cancel()
        for x in benches:
            await x.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs and smaller sizes (about 3 minutes)")
    parser.add_argument("--dir", default=str(REPO / ".hmls-env" / "bench-suite"),
                        help="environments go to DIR/main and DIR/idle (stopped and wiped first)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks"))
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (floors always run)")
    parser.add_argument("--rtt", type=rtt_list, default=[0, 50, 200],
                        help="round trips (ms) of the rtt phase (default 0,50,200)")


def run(args: argparse.Namespace) -> int:
    only = {p for p in args.only.split(",") if p}
    if only - set(PHASES):
        raise SystemExit(f"unknown phases: {', '.join(sorted(only - set(PHASES)))}")
    if shutil.which("kubectl") is None:
        raise SystemExit("kubectl is not on PATH")
    started = time.perf_counter()
    root = Path(args.dir)
    main_env = Environment(root / "main", die_with_parent=True, log=log)
    idle_env = Environment(root / "idle", die_with_parent=True, log=log) if "idle" in only else None
    envs = [e for e in (main_env, idle_env) if e]
    # The environments start side by side, each from a thread of its own that lives until the
    # end: their processes are tied to the thread that spawned them (die_with_parent).
    starters = ThreadPoolExecutor(max_workers=len(envs), thread_name_prefix="env")
    try:
        for env in envs:
            env.down()
        ups = [starters.submit(env.up, spokes=spokes)
               for env, spokes in zip(envs, (QUICK_SPOKES if args.quick else SPOKES, idle.SPOKES),
                                          strict=False)]
        for up in ups:
            up.result()
        up_s = time.perf_counter() - started
        result = asyncio.run(suite(main_env, idle_env, args.quick, only, args.rtt))
    finally:
        for env in envs:
            env.down()
        starters.shutdown()
    result["environment_up_s"] = up_s
    result["total_s"] = time.perf_counter() - started
    result["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    paths = write(Path(args.out), result)
    log(f"done in {result['total_s']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    return 0

