"""Shared pieces of the benchmark suite and the soak beyond the harness they share with the
tests (hmls_devenv.harness: the controller process, metrics reading, request counts): the
environment's clients, /proc statistics, percentiles and the objects the measurements write.

Everything here is plumbing; each measurement lives in its own module (floors,
apply_latency, propagation, scale, idle) and ``run.py`` strings them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from hmls_devenv.environment import Environment
from hmls_devenv.harness import MUTATING, Requests, requests
from hmls_devenv.proxy import FaultProxy
from hmls_devenv.simulator import MLSERVICE

from hmls.commands import cluster as ops
from hmls.domain.kubeconfig import KubeconfigPolicy, vet
from hmls.domain.models import API_VERSION, KIND, OWNER_UID
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import CONFIGMAPS, HMLS, NAMESPACES, SECRETS, Resource
from hmls.kube.watching import Informer

REPO = Path(__file__).resolve().parents[2]
RUNTIMES = Resource("tensorstack.dev/v1beta1", "MLServiceRuntime", "mlserviceruntimes",
                    namespaced=True)
SPOKE_KINDS = (MLSERVICE, RUNTIMES, SECRETS, CONFIGMAPS)
MLSERVICE_BYTES = 2048
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ----- statistics --------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 50) * 1000, "p90_ms": pct(values, 90) * 1000,
            "p99_ms": pct(values, 99) * 1000, "mean_ms": statistics.fmean(values) * 1000}


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares y = intercept + slope·x."""
    slope, intercept = statistics.linear_regression(xs, ys)
    return {"slope": slope, "intercept": intercept}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def rtt_list(text: str) -> list[int]:
    """--rtt: comma-separated round trips in whole milliseconds."""
    return list(dict.fromkeys(int(ms) for ms in text.split(",") if ms))


# ----- objects -----------------------------------------------------------------------
def mlservice(name: str, namespace: str, *, runtime: str = "t9k-torchserve",
              secret: str = "s3-secret") -> Obj:
    """An MLService of exactly MLSERVICE_BYTES bytes of JSON (padded by an annotation)."""
    obj: Obj = {
        "apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "torch-mnist", "team": "inference"},
                     "annotations": {"bench.hmls.tensorstack.dev/padding": ""}},
        "spec": {"default": "origin", "releases": [{
            "name": "origin",
            "predictor": {
                "minReplicas": 1, "maxReplicas": 3,
                "model": {"runtime": runtime, "modelUri": "s3://models/mnist/",
                          "parameters": {"MODEL_PATH": "mnist.mar", "BATCH": "8"}},
                "storage": {"s3": {"secretRef": {"name": secret}}},
                "resources": {"limits": {"cpu": "2", "memory": "4Gi"},
                              "requests": {"cpu": "500m", "memory": "1Gi"}},
                "env": [{"name": f"TS_OPTION_{i}", "value": f"value-{i}"} for i in range(6)],
            }}]},
    }
    pad = MLSERVICE_BYTES - len(json.dumps(obj, separators=(",", ":")))
    obj["metadata"]["annotations"]["bench.hmls.tensorstack.dev/padding"] = "x" * max(pad, 0)
    return obj


def manifests(count: int, namespace: str, suffix: str) -> list[Obj]:
    """The first ``count`` of: MLService, Secret, MLServiceRuntime, ConfigMap, a second
    MLService — the seed's three plus a ConfigMap and a canary; names end in ``suffix``."""
    runtime, secret = f"rt-{suffix}", f"s3-{suffix}"
    pool: list[Obj] = [
        mlservice(f"svc-{suffix}", namespace, runtime=runtime, secret=secret),
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": secret, "namespace": namespace},
         "stringData": {".s3cfg": "host_base = example.s3.local\nuse_https = False\n"}},
        {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLServiceRuntime",
         "metadata": {"name": runtime, "namespace": namespace},
         "spec": {"enabled": True, "template": {"spec": {"containers": [{
             "name": "user-container", "image": "t9kpublic/pytorch-serve:0.4.1-cpu",
             "args": ["torchserve", "--start", "--model-store=/var/lib/t9k/model"],
             "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"cfg-{suffix}", "namespace": namespace},
         "data": {"config.properties": "inference_address=http://0.0.0.0:8080\n"}},
        mlservice(f"canary-{suffix}", namespace, runtime=runtime, secret=secret),
    ]
    if not 1 <= count <= len(pool):
        raise ValueError(f"manifests: 1..{len(pool)}, not {count}")
    return pool[:count]


def hyper(name: str, namespace: str, clusters: list[str], objs: list[Obj]) -> Obj:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"workloads": [{"clusters": clusters, "manifests": objs}]}}


# ----- /proc -------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcStats:
    cpu_s: float
    rss_mb: float
    hwm_mb: float


def proc_stats(pid: int) -> ProcStats:
    """CPU seconds (user+system) and resident memory (now, peak) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    mem = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) / 1024
    return ProcStats(cpu, mem.get("VmRSS", 0.0), mem.get("VmHWM", 0.0))


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of one process's main thread and of all its other threads (for the
    controller: the event loop's default executor)."""
    out = {"main": 0.0, "other_threads": 0.0, "threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out["main" if task.name == str(pid) else "other_threads"] += (
                int(fields[11]) + int(fields[12])) / CLK_TCK
            out["threads"] += 1
    return out


def env_cpu(env: Environment) -> float:
    """CPU seconds used so far by an environment's etcd, API servers and simulator."""
    st = env.state()
    total = 0.0
    for pid in [st.etcd_pid, st.simulator_pid, *(c.pid for c in st.clusters.values())]:
        with contextlib.suppress(OSError):
            total += proc_stats(pid).cpu_s
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK, sum(ticks) / CLK_TCK


def busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How busy all cores were between two ``machine_cpu`` readings (100 = all cores)."""
    return 100 * (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


# ----- request counts (harness.requests) ------------------------------------------------
def by_verb(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (verb, _), v in counts.items():
        out[verb] += v
    return dict(sorted(out.items()))


def requests_total(counts: Counter[tuple[str, str]]) -> int:
    return int(sum(counts.values()))


def reads(counts: Counter[tuple[str, str]]) -> int:
    """GET and LIST (a WATCH is counted when it ends, so it cannot be given to a window)."""
    return int(sum(v for (verb, _), v in counts.items() if verb in ("GET", "LIST")))


def writes_by_resource(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    return {f"{verb} {res}": int(v) for (verb, res), v in sorted(counts.items())
            if verb in MUTATING}


@dataclass
class Bench:
    """The running environment, one client per cluster and a raw HTTPS session."""

    env: Environment
    quick: bool
    clients: dict[str, ClusterClient] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None

    @property
    def hub(self) -> ClusterClient:
        return self.clients["hub"]

    @property
    def spokes(self) -> list[str]:
        return self.env.spokes()

    def server(self, cluster: str) -> str:
        return self.env.state().clusters[cluster].server

    async def open(self) -> None:
        for name in self.env.state().clusters:
            cfg = vet(self.env.kubeconfig(name).read_bytes())
            self.clients[name] = await ClusterClient.from_kubeconfig(name, cfg)
        # raw HTTPS and /metrics with the admin client certificate
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.env.admin_tls(), limit=64))

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()
        if self.http:
            await self.http.close()

    async def join_spokes(self, via: Mapping[str, FaultProxy] | None = None) -> None:
        """Register every spoke on the hub, as ``hmls cluster join`` does (in process); those
        in ``via`` with a kubeconfig that reaches them through their proxy."""
        hub = str(self.env.kubeconfig("hub"))

        def kubeconfig(spoke: str) -> str:
            path = self.env.kubeconfig(spoke)
            if via is None or spoke not in via:
                return str(path)
            proxied = self.env.dir / "proxied" / f"{spoke}.kubeconfig"
            proxied.parent.mkdir(exist_ok=True)
            proxied.write_text(via[spoke].kubeconfig(path.read_text()))
            return str(proxied)

        await asyncio.gather(*(ops.join(s, hub=hub, cluster_kubeconfig=kubeconfig(s),
                                        namespace="hmls-system", policy=KubeconfigPolicy(),
                                        as_is=True, trusted=True)
                               for s in self.spokes))

    @contextlib.asynccontextmanager
    async def far_away(self, rtt: float) -> AsyncIterator[None]:
        """Every spoke joined through a FaultProxy of this process in ``latency`` mode:
        ``rtt`` seconds of round trip (0: the proxy in the path on loopback), joined directly
        again afterwards.  A controller started inside reaches the spokes only through them."""
        proxies = {s: FaultProxy(s, self.env.state().clusters[s].port) for s in self.spokes}
        try:
            for proxy in proxies.values():
                await proxy.start()
                proxy.set("latency", rtt / 2)
            await self.join_spokes(via=proxies)
            yield
        finally:
            await self.join_spokes()
            for proxy in proxies.values():
                await proxy.close()

    async def namespace(self, name: str, clusters: Iterable[str] | None = None) -> None:
        for c in clusters or self.clients:
            with contextlib.suppress(errors.Conflict):
                await self.clients[c].create(NAMESPACES, None, {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    async def clean(self, namespace: str, clusters: Iterable[str], *, owned_only: bool = True
                    ) -> None:
        """Delete the benchmark's objects in one namespace of some spokes (delete-collection),
        so the next controller's spoke informers start from nothing.  One cluster at a time:
        at 1,000 CRs x 16 spokes, 48 delete-collections at once outlasted the request timeout.
        A delete-collection that times out is sent again (what it deleted stays deleted): at
        10,000 CRs one spoke's 30,000 objects outlast it too."""
        query = [("labelSelector", OWNER_UID)] if owned_only else []

        async def delete_all(client: ClusterClient, res: Resource) -> None:
            for attempt in range(1, 21):
                try:
                    await client.request("DELETE", res.path(namespace), query=query)
                    return
                except errors.Unreachable as exc:
                    log(f"clean {res.plural} on {client.name} (attempt {attempt}): {exc}")
            raise RuntimeError(f"could not delete {res.plural} on {client.name}")

        for c in clusters:
            await asyncio.gather(*(delete_all(self.clients[c], res) for res in SPOKE_KINDS))

    async def create_all(self, objs: list[Obj], *, concurrency: int = 16) -> None:
        """Create HyperMLServices on the hub, ``concurrency`` at a time."""
        sem = asyncio.Semaphore(concurrency)

        async def one(obj: Obj) -> None:
            async with sem:
                await self.hub.create(HMLS, obj["metadata"]["namespace"], obj)

        await asyncio.gather(*(one(o) for o in objs))

    async def requests(self, clusters: Iterable[str] | None = None) -> Requests:
        return await requests(self.env, clusters, session=self.http)


NAMESPACE = "bench"
"""The hub and spoke namespace of the latency measurements."""


def cond(obj: Obj | None, ctype: str) -> str | None:
    """A condition's status, if it speaks of the object's current generation."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("observedGeneration") == obj["metadata"].get("generation"):  # type: ignore[index]
            return str(c.get("status"))
    return None


class HubWatch:
    """A hub watch on one namespace's HyperMLServices that tells when ``count`` of them
    satisfy a predicate at the same time: the perf_counter() of the event that completes the
    set (``when``: a future to take before the change that is timed)."""

    def __init__(self, hub: ClusterClient, namespace: str) -> None:
        self.namespace = namespace
        self.informer: Informer[Obj] = Informer(hub, HMLS, namespace=namespace, on_event=self._event)
        self._waiters: list[tuple[Callable[[Obj], bool], int, set[str], asyncio.Future[float]]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> HubWatch:
        self._task = asyncio.create_task(self.informer.run())
        await self.informer.synced.wait()
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> HubWatch:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        now = time.perf_counter()
        obj = new or old
        if obj is None:
            return
        name = obj["metadata"]["name"]
        for pred, count, ok, fut in list(self._waiters):
            if new is not None and pred(new):
                ok.add(name)
            else:
                ok.discard(name)
            if len(ok) >= count and not fut.done():
                fut.set_result(now)
                self._waiters.remove((pred, count, ok, fut))

    def get(self, name: str) -> Obj | None:
        return self.informer.get(self.namespace, name)

    def when(self, pred: Callable[[Obj], bool], count: int = 1) -> asyncio.Future[float]:
        ok = {o["metadata"]["name"] for o in self.informer.store.values() if pred(o)}
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if len(ok) >= count:
            fut.set_result(time.perf_counter())
        else:
            self._waiters.append((pred, count, ok, fut))
        return fut

    async def until(self, pred: Callable[[Obj], bool], count: int, timeout: float) -> float:
        """``when``, awaited for at most ``timeout`` seconds."""
        fut = self.when(pred, count)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            now = sum(1 for o in self.informer.store.values() if pred(o))
            raise TimeoutError(f"only {now} of {count} HyperMLServices in {self.namespace} "
                               f"got there within {timeout:.0f}s") from None


# ----- the controller process --------------------------------------------------------
