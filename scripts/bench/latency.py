"""End-to-end latency on the local environment (real API servers, loopback).

  create → FullyApplied / Ready: a HyperMLService (the seed's 3 manifests, N spokes) is
      created through the API; the clock stops when a hub watch shows the condition.
  spoke status → hub: an MLService's Ready condition is flipped on one spoke (status
      subresource, as its controller would); the clock stops when the hub's aggregated
      status shows it.
  not-ready → route change: the same flip on spoke2 of a HyperMLService with a traffic
      section (30/70); the clock stops when the ingress cluster's VirtualService watch shows
      spoke1 at 100.

Prints p50/p90/p99 and writes a JSON result.  Usage:
  python scripts/bench/latency.py [--runs 30] [--spokes 2] [--out result.json]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import summary
from hmls_devenv.environment import Environment
from hmls_devenv.simulator import MLSERVICE

from hmls.domain.kubeconfig import vet
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"


def cond(obj: Obj | None, ctype: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("observedGeneration") == obj["metadata"].get("generation"):  # type: ignore[index]
            return str(c.get("status"))
    return None


class Watcher:
    """Hub watch that resolves futures when an object satisfies a predicate."""

    def __init__(self, hub: ClusterClient, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.informer: Informer[Obj] = Informer(hub, HMLS, namespace=namespace, on_event=self._event)
        self.waiters: list[tuple[Any, asyncio.Future[float]]] = []

    def _event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        now = time.perf_counter()
        for pred, fut in list(self.waiters):
            if new is not None and not fut.done() and pred(new):
                fut.set_result(now)
                self.waiters.remove((pred, fut))

    def wait(self, pred: Any) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((pred, fut))
        return fut


async def measure(env: Environment, runs: int) -> dict[str, Any]:
    clients = {n: await ClusterClient.from_kubeconfig(n, vet(env.kubeconfig(n).read_bytes()))
               for n in env.state().clusters}
    hub, spokes = clients["hub"], env.spokes()
    watcher = Watcher(hub)
    task = asyncio.create_task(watcher.informer.run())
    await watcher.informer.synced.wait()
    sample = yaml.safe_load((REPO / "config/samples/hmls-sample.yaml").read_text())
    sample["metadata"]["namespace"] = NAMESPACE
    sample["spec"]["workloads"][0]["clusters"] = spokes
    for m in sample["spec"]["workloads"][0]["manifests"]:
        m["metadata"]["namespace"] = NAMESPACE
    applied, ready, propagate = [], [], []
    for i in range(runs):
        obj = copy.deepcopy(sample)
        obj["metadata"]["name"] = f"lat-{i}"

        def mine(o: Obj, name: str = obj["metadata"]["name"]) -> bool:
            return bool(o["metadata"]["name"] == name)

        fa = watcher.wait(lambda o, m=mine: m(o) and cond(o, "FullyApplied") == "True")
        rd = watcher.wait(lambda o, m=mine: m(o) and cond(o, "Ready") == "True")
        t0 = time.perf_counter()
        await hub.create(HMLS, NAMESPACE, obj)
        applied.append(await asyncio.wait_for(fa, 30) - t0)
        ready.append(await asyncio.wait_for(rd, 30) - t0)
        # flip Ready=False on one spoke, as the MLService controller would
        spoke = clients[spokes[i % len(spokes)]]
        live = await spoke.get(MLSERVICE, NAMESPACE, "torch-mnist-s3")
        assert live is not None
        status = copy.deepcopy(live["status"])
        for c in status["conditions"]:
            if c["type"] == "Ready":
                c["status"] = "False"
        notready = watcher.wait(lambda o, m=mine: m(o) and cond(o, "Ready") == "False")
        t0 = time.perf_counter()
        await spoke.patch(MLSERVICE, NAMESPACE, "torch-mnist-s3", {"status": status},
                          subresource="status", field_manager="bench")
        propagate.append(await asyncio.wait_for(notready, 30) - t0)
        back = watcher.wait(lambda o, m=mine: m(o) and cond(o, "Ready") == "True")
        await asyncio.wait_for(back, 30)  # the simulator restores it
        await hub.delete(HMLS, NAMESPACE, obj["metadata"]["name"])
    reroute = await measure_reroute(clients, watcher, sample, spokes, runs)
    task.cancel()
    for c in clients.values():
        await c.close()
    return {"spokes": len(spokes), "manifests_per_cluster": 3,
            "create_to_fully_applied": summary(applied), "create_to_ready": summary(ready),
            "spoke_status_to_hub": summary(propagate),
            "spoke_not_ready_to_virtualservice": summary(reroute),
            "note": "create_to_ready includes the simulator's 0.5 s status delay"}


async def flip_ready(spoke: ClusterClient, value: str) -> None:
    live = await spoke.get(MLSERVICE, NAMESPACE, "torch-mnist-s3")
    assert live is not None
    status = copy.deepcopy(live["status"])
    for c in status["conditions"]:
        if c["type"] == "Ready":
            c["status"] = value
    await spoke.patch(MLSERVICE, NAMESPACE, "torch-mnist-s3", {"status": status},
                      subresource="status", field_manager="bench")


async def measure_reroute(clients: dict[str, ClusterClient], watcher: Watcher, sample: Obj,
                          spokes: list[str], runs: int) -> list[float]:
    """Flip spoke2's MLService not-ready; time until the VirtualService drops it."""
    waiting: list[tuple[Any, asyncio.Future[float]]] = []

    def on_vs(kind: str, old: Obj | None, new: Obj | None) -> None:
        now = time.perf_counter()
        for pred, fut in list(waiting):
            if new is not None and not fut.done() and pred(new):
                fut.set_result(now)
                waiting.remove((pred, fut))

    def weights(vs: Obj) -> list[int]:
        return [r["weight"] for r in vs["spec"]["http"][0]["route"]]

    vs_res = await clients["ingress"].resource("networking.istio.io/v1beta1", "VirtualService")
    informer: Informer[Obj] = Informer(clients["ingress"], vs_res, namespace=NAMESPACE, on_event=on_vs)
    task = asyncio.create_task(informer.run())
    await informer.synced.wait()
    obj = copy.deepcopy(sample)
    obj["metadata"]["name"] = "traffic"
    obj["spec"]["traffic"] = {"ingressCluster": "ingress", "recoverySeconds": 0,
                              "weights": {spokes[0]: 30, spokes[1]: 70}}
    fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    waiting.append((lambda vs: weights(vs) == [30, 70], fut))
    await clients["hub"].create(HMLS, NAMESPACE, obj)
    await asyncio.wait_for(fut, 30)
    out = []
    for _ in range(runs):
        fut = asyncio.get_running_loop().create_future()
        waiting.append((lambda vs: weights(vs) == [100], fut))
        t0 = time.perf_counter()
        await flip_ready(clients[spokes[1]], "False")
        out.append(await asyncio.wait_for(fut, 30) - t0)
        back: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiting.append((lambda vs: weights(vs) == [30, 70], back))
        await asyncio.wait_for(back, 30)  # the simulator restores Ready
    task.cancel()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--spokes", type=int, default=2)
    parser.add_argument("--dir", default=str(REPO / ".hmls-env" / "bench"))
    parser.add_argument("--out")
    args = parser.parse_args()
    env = Environment(Path(args.dir), die_with_parent=True)
    env.down()
    env.up(spokes=args.spokes)
    try:
        hub = str(env.kubeconfig("hub"))
        for spoke in [*env.spokes(), "ingress"]:
            subprocess.run([sys.executable, "-m", "hmls", "cluster", "join", spoke, "--kubeconfig",
                            hub, "--cluster-kubeconfig", str(env.kubeconfig(spoke)),
                            "--kubeconfig-as-is", "--trust-hub-namespaces"], check=True)
        for c in env.state().clusters:
            subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig(c)), "create",
                            "namespace", NAMESPACE], check=True, capture_output=True)
        env.start_process("controller", [sys.executable, "-m", "hmls", "controller",
                                         "--kubeconfig", hub,
                                         "--metrics-bind-address", "127.0.0.1:18090"])
        time.sleep(2)
        result = asyncio.run(measure(env, args.runs))
    finally:
        env.down()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
