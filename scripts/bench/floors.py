"""Floors: what single API calls cost on this machine, measured before any controller runs.

  apply          server-side apply of a 2 KB MLService to spoke1, each one a real change (an
                 annotation counter), through three paths: raw aiohttp (admin client certificate
                 from the environment's pki dir; the response is read, not parsed),
                 ``ClusterClient.apply`` (what the controller uses: its own aiohttp session,
                 JSON bodies, parsed response) and kubernetes-asyncio's generated
                 ``CustomObjectsApi`` (what ClusterClient used to go through: model sanitising
                 and a ``trust_env`` session), at concurrency 1, 4 and 16: ops/s and latency
                 (the paths alternate in 4 rounds, so a change in load hits all alike); also
                 the bench process's own CPU per apply (all its threads), which is what a path
                 costs the caller whatever the servers' speed.
  hub_create     POST of a HyperMLService to the hub.
  hub_patch      a metadata merge patch on the hub (what adding the finalizer costs).
  status_patch   a status-subresource merge patch of a HyperMLService on the hub, with an
                 aggregatedStatus item and conditions (what the controller writes).
  watch_delivery from issuing that status patch until a hub watch (``Informer``) sees it.
  status_write   the controller's status write (``Hub.write_status``: a merge patch of every
                 difference from the stored status, at any depth, conditional on its
                 resourceVersion) against the write it replaced (the whole new status with
                 null for each top-level key it lacks, which left nested keys behind), over
                 the same sequence of statuses (4 clusters x the seed's 3 manifests, one
                 cluster's MLService turning not ready and back per write), alternating:
                 request body bytes and latency.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import MLSERVICE_BYTES, Bench, hyper, log, mlservice, summary
from hmls_devenv.simulator import MLSERVICE
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from hmls.domain.health import Health
from hmls.domain.render import ResourceRef
from hmls.domain.status import ItemResult, Status, aggregate, status_patch
from hmls.engine.hub import Hub
from hmls.engine.hubcache import HubCache
from hmls.kube.client import APPLY, Obj
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer
from hmls.metrics import Metrics

NS = "bench-floor"
MANAGER = "bench-floor"
SEQ = "bench.hmls.tensorstack.dev/seq"
CONCURRENCY = (1, 4, 16)
ROUNDS = 4
_seq = itertools.count()


def _variant(template: Obj, worker: int, seq: int) -> Obj:
    meta = template["metadata"]
    return {**template, "metadata": {**meta, "name": f"floor-{worker}",
                                     "annotations": {**meta["annotations"], SEQ: str(seq)}}}


async def _round(apply: Callable[[Obj], Awaitable[Any]], template: Obj, concurrency: int,
                 ops: int) -> tuple[list[float], float, float]:
    """``ops`` applies spread over ``concurrency`` workers, each on its own object:
    (latencies, wall seconds, this process's CPU seconds)."""
    latencies: list[float] = []

    async def worker(w: int) -> None:
        for _ in range(ops // concurrency):
            obj = _variant(template, w, next(_seq))
            t0 = time.perf_counter()
            await apply(obj)
            latencies.append(time.perf_counter() - t0)

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, time.perf_counter() - t0, time.process_time() - cpu0


async def _applies(b: Bench, ops: int) -> dict[str, dict[str, dict[str, float]]]:
    assert b.http is not None
    spoke = b.clients["spoke1"]
    server = b.server("spoke1")
    http = b.http
    template = mlservice("floor", NS)

    async def raw(obj: Obj) -> None:
        url = server + MLSERVICE.path(NS, obj["metadata"]["name"])
        async with http.patch(url, params={"fieldManager": MANAGER}, data=json.dumps(obj),
                              headers={"Content-Type": APPLY, "Accept": "application/json"}) as r:
            r.raise_for_status()
            await r.read()

    async def client(obj: Obj) -> None:
        await spoke.apply(obj, field_manager=MANAGER, resource=MLSERVICE)

    generated_api = await k8s_config.new_client_from_config(config_file=str(b.env.kubeconfig("spoke1")))
    custom = k8s_client.CustomObjectsApi(generated_api)
    group, version = MLSERVICE.api_version.split("/")

    async def generated(obj: Obj) -> None:
        await custom.patch_namespaced_custom_object(
            group, version, NS, MLSERVICE.plural, obj["metadata"]["name"], obj,
            # _content_type goes through **kwargs; the package's .pyi stub does not list it
            field_manager=MANAGER, _content_type=APPLY)  # type: ignore[call-arg]

    paths = {"raw_http": raw, "cluster_client": client, "kubernetes_asyncio": generated}
    for fn in paths.values():  # warm-up: the objects exist, connection pools are filled
        await _round(fn, template, max(CONCURRENCY), max(CONCURRENCY))
    out: dict[str, dict[str, dict[str, float]]] = {p: {} for p in paths}
    for c in CONCURRENCY:
        lat: dict[str, list[float]] = {p: [] for p in paths}
        wall, cpu = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0.0)
        for _ in range(ROUNDS):  # alternate, so that a change in load hits all paths alike
            for p, fn in paths.items():
                got, seconds, cpu_s = await _round(fn, template, c, ops // ROUNDS)
                lat[p] += got
                wall[p] += seconds
                cpu[p] += cpu_s
        for p in paths:
            out[p][f"c{c}"] = {"concurrency": c, "ops_per_s": len(lat[p]) / wall[p],
                               "cpu_ms_per_op": 1000 * cpu[p] / len(lat[p]), **summary(lat[p])}
    await generated_api.close()
    return out


def _status(seq: int) -> Obj:
    return {"observedGeneration": 1, "summary": {"clusters": 1, "applied": "1/1", "ready": "1/1"},
            "aggregatedStatus": [{
                "cluster": "spoke1", "applied": True,
                "appliedMessage": "Manifest has been successfully applied", "ready": True,
                "resource": {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
                             "name": "floor", "namespace": NS},
                "status": {"address": {"url": f"http://floor-{seq}.{NS}.ksvc.spoke1.t9kcloud.cn"},
                           "conditions": [{"type": "Ready", "status": "True"}]}}],
            "conditions": [{"type": "FullyApplied", "status": "True", "reason": "AllApplied",
                            "message": "All manifests have been successfully applied",
                            "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}


async def _hub(b: Bench, runs: int) -> dict[str, dict[str, float]]:
    hub = b.hub
    spec_objs = [mlservice("floor", NS)]
    creates = []
    for i in range(runs):
        obj = hyper(f"floor-create-{i}-{int(time.time())}", NS, ["spoke1"], spec_objs)
        t0 = time.perf_counter()
        await hub.create(HMLS, NS, obj)
        creates.append(time.perf_counter() - t0)
    target = hyper(f"floor-status-{int(time.time())}", NS, ["spoke1"], spec_objs)
    name = (await hub.create(HMLS, NS, target))["metadata"]["name"]
    patches = []
    for i in range(runs):
        t0 = time.perf_counter()
        await hub.patch(HMLS, NS, name, {"metadata": {"labels": {SEQ: str(i)}}},
                        field_manager=MANAGER)
        patches.append(time.perf_counter() - t0)

    waiting: dict[str, asyncio.Future[float]] = {}

    def on_event(kind: str, old: Obj | None, new: Obj | None) -> None:
        now = time.perf_counter()
        url = (((new or {}).get("status") or {}).get("aggregatedStatus") or [{}])[0]
        fut = waiting.pop(str(((url.get("status") or {}).get("address") or {}).get("url")), None)
        if fut and not fut.done():
            fut.set_result(now)

    informer: Informer[Obj] = Informer(hub, HMLS, namespace=NS, on_event=on_event)
    task = asyncio.create_task(informer.run())
    await informer.synced.wait()
    status_rtt, delivery = [], []
    for i in range(runs):
        status = _status(i)
        fut = asyncio.get_running_loop().create_future()
        waiting[status["aggregatedStatus"][0]["status"]["address"]["url"]] = fut
        t0 = time.perf_counter()
        await hub.patch(HMLS, NS, name, {"status": status}, subresource="status",
                        field_manager=MANAGER)
        status_rtt.append(time.perf_counter() - t0)
        delivery.append(await asyncio.wait_for(fut, 10) - t0)
    task.cancel()
    return {"hub_create": summary(creates), "hub_patch": summary(patches),
            "status_patch": summary(status_rtt), "watch_delivery": summary(delivery)}


def _statuses(runs: int) -> list[Status]:
    """A HyperMLService's status over ``runs`` writes: 4 clusters x the seed's 3 manifests,
    one cluster's MLService turning not ready, then ready again, per write."""
    clusters = ["spoke1", "spoke2", "spoke3", "spoke4"]
    kinds = [("v1", "Secret", "s3-secret"), ("tensorstack.dev/v1beta1", "MLServiceRuntime",
                                             "t9k-torchserve"),
             ("tensorstack.dev/v1beta1", "MLService", "torch-mnist-s3")]
    out, previous = [], Status()
    for i in range(runs):
        down = clusters[i % 4] if i % 2 else None
        items = []
        for c in clusters:
            for api, kind, name in kinds:
                ref = ResourceRef(api, kind, NS, name)
                if kind != "MLService":
                    items.append(ItemResult(c, ref, True, "Manifest has been successfully "
                                            "applied"))
                    continue
                ok = c != down
                status = {"address": {"url": f"http://{name}.{NS}.ksvc.{c}.t9kcloud.cn"},
                          "conditions": [{"type": "Ready", "status": str(ok)}],
                          "releases": [{"name": "origin", "ready": ok, "readyReplicas": int(ok),
                                        "totalReplicas": 1, "trafficPercent": 100}]}
                items.append(ItemResult(c, ref, True, "Manifest has been successfully applied",
                                        status, Health(ok, "" if ok else "Ready is False")))
        previous = aggregate(generation=1, items=items, previous=previous,
                             now=f"2026-12-07T00:{i // 60:02d}:{i % 60:02d}Z")
        out.append(previous)
    return out


async def _status_writes(b: Bench, runs: int) -> dict[str, Any]:
    """The status write against the one it replaced, alternating on two HyperMLServices."""
    hub = Hub(b.hub, HubCache({}), Metrics())
    stamp = int(time.time())
    objs = {how: await b.hub.create(HMLS, NS, hyper(
        f"floor-write-{how.replace('_', '-')}-{stamp}", NS, ["spoke1"], [mlservice("floor", NS)]))
        for how in ("exact", "top_level")}
    sizes: dict[str, list[int]] = {how: [] for how in objs}
    rtt: dict[str, list[float]] = {how: [] for how in objs}
    for status in _statuses(runs):
        for how, obj in objs.items():
            wire = status.to_wire()
            stored = obj.get("status") or {}
            meta = obj["metadata"]
            if how == "exact":
                patch = status_patch(stored, wire)
                body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                        "status": patch}
                t0 = time.perf_counter()
                objs[how] = await hub.write_status(obj, status) or obj
            else:  # the write of 417e839: nested keys the new status lacks survived
                body = {"status": {**dict.fromkeys(stored), **wire}}
                t0 = time.perf_counter()
                objs[how] = await b.hub.patch(HMLS, NS, meta["name"], body,
                                              subresource="status", field_manager=MANAGER)
            rtt[how].append(time.perf_counter() - t0)
            sizes[how].append(len(json.dumps(body, separators=(",", ":"))))
    return {how: {"bytes_mean": sum(sizes[how]) / len(sizes[how]),
                  "bytes_p50": sorted(sizes[how])[len(sizes[how]) // 2], **summary(rtt[how])}
            for how in objs}


async def _readyz(b: Bench, runs: int) -> list[float]:
    """One cluster health probe, as the controller's Spoke makes it."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await b.clients["spoke1"].readyz()
        out.append(time.perf_counter() - t0)
    return out


async def run(b: Bench) -> dict[str, Any]:
    ops = 128 if b.quick else 512
    runs = 30 if b.quick else 100
    await b.namespace(NS, ["hub", "spoke1"])
    applies = await _applies(b, ops)
    hub = await _hub(b, runs)
    hub["readyz"] = summary(await _readyz(b, runs))
    writes = await _status_writes(b, runs)
    result: dict[str, Any] = {"object_bytes": MLSERVICE_BYTES, "ops_per_level": ops,
                              "apply": applies, **hub, "status_write": writes}
    for c in CONCURRENCY:
        raw, cli = applies["raw_http"][f"c{c}"], applies["cluster_client"][f"c{c}"]
        gen = applies["kubernetes_asyncio"][f"c{c}"]
        log(f"floor apply c={c}: raw {raw['ops_per_s']:.0f} ops/s p50 {raw['p50_ms']:.1f} ms "
            f"p99 {raw['p99_ms']:.1f} ms | ClusterClient {cli['ops_per_s']:.0f} ops/s p50 "
            f"{cli['p50_ms']:.1f} ms p99 {cli['p99_ms']:.1f} ms "
            f"(client/raw p50 x{cli['p50_ms'] / raw['p50_ms']:.2f}) | kubernetes-asyncio "
            f"{gen['ops_per_s']:.0f} ops/s p50 {gen['p50_ms']:.1f} ms | caller CPU per apply: raw "
            f"{raw['cpu_ms_per_op']:.2f} ms, ClusterClient {cli['cpu_ms_per_op']:.2f} ms, "
            f"kubernetes-asyncio {gen['cpu_ms_per_op']:.2f} ms")
    for key in ("hub_create", "hub_patch", "status_patch", "watch_delivery", "readyz"):
        log(f"floor {key}: p50 {hub[key]['p50_ms']:.1f} ms p99 {hub[key]['p99_ms']:.1f} ms")
    exact, top = writes["exact"], writes["top_level"]
    log(f"status write (4 clusters x 3 manifests, one MLService flipping per write): exact "
        f"diff {exact['bytes_mean']:.0f} B, p50 {exact['p50_ms']:.1f} ms | the write it "
        f"replaced {top['bytes_mean']:.0f} B, p50 {top['p50_ms']:.1f} ms (bytes "
        f"x{exact['bytes_mean'] / top['bytes_mean']:.2f}, p50 x{exact['p50_ms'] / top['p50_ms']:.2f})")
    return result


def apply_ops_max(floors: dict[str, Any]) -> float:
    """The best ClusterClient apply throughput measured (ops/s)."""
    return float(max(v["ops_per_s"] for v in floors["apply"]["cluster_client"].values()))


def p50_s(floors: dict[str, Any], key: str) -> float:
    if key == "apply":
        return float(floors["apply"]["cluster_client"]["c1"]["p50_ms"]) / 1000
    return float(floors[key]["p50_ms"]) / 1000
