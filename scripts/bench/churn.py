"""Churn: does the controller give back what a HyperMLService's lifecycle costs?

Runs the controller **in this process** (so ``tracemalloc`` sees its heap) against a local
environment (hub + 2 spokes), and repeats rounds of: create N HyperMLServices (each a
ConfigMap on both spokes), wait until all are FullyApplied, delete them all, wait until they
are gone.  Prints the RSS and the traced heap after each round, the growth per CR lifecycle
after the warm-up rounds, and the source lines whose allocations grew the most between the
end of the warm-up and the last round.

  python scripts/bench/churn.py [--rounds 12] [--crs 50] [--warmup 3] [--no-trace] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from pathlib import Path
from typing import Any

from common import REPO, Bench, hyper, log
from hmls_devenv.environment import Environment
from hmls_devenv.harness import eventually, free_port

from hmls.engine.manager import Manager
from hmls.kube.resources import HMLS
from hmls.settings import Settings

NS = "bench-churn"


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS},
            "data": {"k": "v"}}


async def round_trip(b: Bench, crs: int, n: int) -> None:
    names = [f"churn-{n}-{i}" for i in range(crs)]
    await b.create_all([hyper(x, NS, b.spokes, [configmap(x)]) for x in names])

    async def fully_applied() -> bool:
        listed, _ = await b.hub.list(HMLS, namespace=NS)
        return sum(1 for o in listed if any(
            c.get("type") == "FullyApplied" and c.get("status") == "True"
            for c in (o.get("status") or {}).get("conditions") or [])) == crs

    async def gone() -> bool:
        return not (await b.hub.list(HMLS, namespace=NS))[0]

    await eventually(fully_applied, timeout=120, interval=0.2, what=f"round {n} FullyApplied")
    await asyncio.gather(*(b.hub.delete(HMLS, NS, x) for x in names))
    await eventually(gone, timeout=120, interval=0.2, what=f"round {n} deleted")


async def run(env: Environment, rounds: int, crs: int, warmup: int, trace: bool) -> None:
    b = Bench(env, quick=True)
    await b.open()
    await b.join_spokes()
    await b.namespace(NS, ["hub", *b.spokes])
    if trace:  # tracing costs memory of its own: RSS is honest only without it
        tracemalloc.start(12)
    manager = Manager(Settings(kubeconfig=str(env.kubeconfig("hub")), watch_namespaces=(NS,),
                               metrics_host="127.0.0.1", metrics_port=free_port()))
    task = asyncio.create_task(manager.run())
    while manager.ready() != (True, "ok"):  # noqa: ASYNC110 - the manager has no event for it
        await asyncio.sleep(0.1)
    base: tracemalloc.Snapshot | None = None
    base_rss = base_heap = 0
    try:
        for n in range(1, rounds + 1):
            await round_trip(b, crs, n)
            await asyncio.sleep(1.0)  # let the last events and requeues settle
            gc.collect()
            heap = tracemalloc.get_traced_memory()[0] // 1024
            log(f"round {n:2}: RSS {rss_kb()} KB, traced heap {heap} KB")
            if n == warmup:
                base_rss, base_heap = rss_kb(), heap
                base = tracemalloc.take_snapshot() if trace else None
        lifecycles = crs * (rounds - warmup)
        heap = tracemalloc.get_traced_memory()[0] // 1024
        log(f"after the warm-up ({warmup} rounds) to round {rounds}: {lifecycles} lifecycles, "
            f"RSS {rss_kb() - base_rss:+d} KB ({1024 * (rss_kb() - base_rss) / lifecycles:+.0f} "
            f"B per lifecycle), traced heap {heap - base_heap:+d} KB "
            f"({1024 * (heap - base_heap) / lifecycles:+.0f} B per lifecycle)")
        stats = tracemalloc.take_snapshot().compare_to(base, "traceback") if base else []
        for stat in stats[:8]:
            if stat.size_diff <= 0:
                break
            where = [f"{f.filename.replace(str(REPO) + '/', '')}:{f.lineno}"
                     for f in stat.traceback if "hmls" in f.filename][-3:]
            log(f"  {stat.size_diff / 1024:+.1f} KB in {stat.count_diff:+d} blocks: "
                f"{' <- '.join(reversed(where)) or stat.traceback[-1]}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await b.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--crs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-trace", action="store_true",
                        help="without tracemalloc: RSS only, as a controller runs")
    parser.add_argument("--dir", default=str(REPO / ".hmls-env" / "bench-churn"))
    args = parser.parse_args()
    env = Environment(Path(args.dir), die_with_parent=True, log=log)
    env.down()
    env.up(spokes=2)
    try:
        asyncio.run(run(env, args.rounds, args.crs, args.warmup, not args.no_trace))
    finally:
        env.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
