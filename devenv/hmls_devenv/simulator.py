"""MLService simulator: plays T9k's MLService controller on each local spoke.

This is a SIMULATOR for tests and demos, not T9k's controller.  When an MLService appears or
its spec changes it writes, after ``delay`` seconds, the status shape of the HyperMLService
seed document: ``address.url``, ``Paused``/``Ready`` conditions, ``defaultRelease`` and
``releases[]`` (ready, readyReplicas, totalReplicas, trafficPercent, url).

Knob: the annotation ``simulator.hmls.tensorstack.dev/ready: "false"`` on an MLService makes
it go not-ready (Ready=False, readyReplicas 0); removing it or setting "true" recovers.

Simulated traffic, served as Prometheus metrics: every second each MLService whose status is
Ready answers ``RATE`` requests split over its releases by ``trafficPercent`` (fractions carried,
so the counts are exact over time), counted in ``mlservice_requests_total{cluster, namespace,
mlservice, release, code}`` (code "200" or "500") and observed in
``mlservice_request_duration_seconds{cluster, namespace, mlservice, release}``.  Knobs: the
annotations ``simulator.hmls.tensorstack.dev/error-ratio`` (the fraction answered 500, default
0) and ``simulator.hmls.tensorstack.dev/latency-seconds`` (default 0.05); an invalid value is
logged and ignored.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hmls.domain.models import timestamp
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import Resource
from hmls.kube.watching import Informer

KNOB_PREFIX = "simulator.hmls.tensorstack.dev/"
READY_KNOB = KNOB_PREFIX + "ready"
ERROR_RATIO_KNOB = KNOB_PREFIX + "error-ratio"
LATENCY_KNOB = KNOB_PREFIX + "latency-seconds"
RATE = Fraction(20)
"""Simulated requests per second to an MLService (all its releases together)."""
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of mlservice_request_duration_seconds."""
MLSERVICE = Resource("tensorstack.dev/v1beta1", "MLService", "mlservices", namespaced=True)
log = logging.getLogger("hmls.simulator")


def _now() -> str:
    return timestamp(dt.datetime.now(dt.UTC))


def desired_status(obj: Obj, *, domain: str, previous: Obj | None, now: str) -> Obj:
    """The status T9k's controller would report for this MLService (pure)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name, ns = meta["name"], meta.get("namespace", "default")
    ready = (meta.get("annotations") or {}).get(READY_KNOB, "true").lower() != "false"
    default = spec.get("default") or ""
    canary = spec.get("canary")
    canary_pct = int(spec.get("canaryTrafficPercent") or 0) if canary else 0
    releases = []
    for rel in spec.get("releases") or []:
        rname = rel.get("name", "")
        if rname not in (default, canary):
            continue
        total = int((rel.get("predictor") or {}).get("minReplicas", 1) or 1)
        releases.append({
            "name": rname,
            "ready": ready,
            "readyReplicas": total if ready else 0,
            "totalReplicas": total,
            "trafficPercent": canary_pct if rname == canary else 100 - canary_pct,
            "url": f"http://{name}-predict-{rname}.{ns}.ksvc.{domain}",
        })
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}

    def cond(ctype: str, status: str, reason: str = "", message: str = "") -> Obj:
        c: Obj = {"type": ctype, "status": status}
        if reason:
            c["reason"], c["message"] = reason, message
        prev = old.get(ctype)
        c["lastTransitionTime"] = (prev or {}).get("lastTransitionTime") if (
            prev and prev.get("status") == status) else now
        return c

    status: Obj = {
        "address": {"url": f"http://{name}.{ns}.ksvc.{domain}"},
        "conditions": [
            cond("Paused", "False"),
            cond("Ready", "True") if ready else cond(
                "Ready", "False", "PredictorNotReady", "simulated: 0 of the predictor's replicas are ready"),
        ],
        "defaultRelease": default,
        "releases": releases,
    }
    if canary:
        status["canaryRelease"] = canary
    return status


def view(obj: Obj) -> Obj:
    """What the simulator reads of an MLService, kept in its cache instead of the whole
    object (a benchmark's MLServices carry kilobytes it never reads: 10,000 x 16 of them took
    8.5 GB): name, namespace, the simulator's annotations, the releases' names and
    replicas, the canary and the status."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k.startswith(KNOB_PREFIX)}
    return {
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default"),
                     "annotations": annotations},
        "spec": {**{k: spec[k] for k in ("default", "canary", "canaryTrafficPercent")
                    if k in spec},
                 "releases": [{"name": r.get("name", ""), "predictor": {
                     "minReplicas": (r.get("predictor") or {}).get("minReplicas", 1)}}
                     for r in spec.get("releases") or []]},
        "status": obj.get("status"),
    }


def _comparable(status: Any) -> Any:
    if isinstance(status, dict):
        return {k: _comparable(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_comparable(v) for v in status]
    return status


WRITE_ATTEMPTS = 30
"""A status write is tried this often (backoff up to 5 s: about two minutes)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Knobs:
    """How an MLService's simulated requests go."""

    error_ratio: Fraction = Fraction(0)
    latency: float = 0.05


def _ratio(text: str) -> Fraction:
    value = Fraction(text.strip())
    if not 0 <= value <= 1:
        raise ValueError("not a ratio from 0 to 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("not a number of seconds >= 0")
    return value


def knobs(obj: Obj) -> tuple[Knobs, list[str]]:
    """The traffic knobs an MLService's annotations set, and why any of them is ignored."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    problems: list[str] = []

    def knob(key: str, parse: Callable[[str], T], default: T) -> T:
        raw = annotations.get(key)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, ZeroDivisionError) as exc:
            problems.append(f"{key}={raw!r} ignored ({exc}); using {default}")
            return default

    default = Knobs()
    out = Knobs(error_ratio=knob(ERROR_RATIO_KNOB, _ratio, default.error_ratio),
                latency=knob(LATENCY_KNOB, _seconds, default.latency))
    return out, problems


@dataclass
class Requests:
    """One release's simulated requests so far, cumulative as Prometheus counts them."""

    ok: int = 0
    errors: int = 0
    per_bucket: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    """Observations by the first bucket that holds them (the last: above every bound)."""
    seconds: float = 0.0
    _owed: Fraction = Fraction(0)
    """The fraction of a request due but not yet counted (carried to the next second)."""
    _owed_errors: Fraction = Fraction(0)
    """Likewise of an error."""

    def serve(self, due: Fraction, knobs: Knobs) -> None:
        self._owed += due
        n = math.floor(self._owed)
        self._owed -= n
        self._owed_errors += n * knobs.error_ratio
        errors = math.floor(self._owed_errors)
        self._owed_errors -= errors
        self.ok += n - errors
        self.errors += errors
        self.per_bucket[bisect.bisect_left(BUCKETS, knobs.latency)] += n
        self.seconds += n * knobs.latency

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as a Prometheus histogram exposes them."""
        running, out = 0, []
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.per_bucket, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


@dataclass(frozen=True)
class Route:
    """What an MLService's traffic follows: its releases' trafficPercent while it is Ready."""

    percents: tuple[tuple[str, int], ...]
    knobs: Knobs


@dataclass
class _Followed:
    """One MLService as the traffic follows it."""

    route: Route
    counted: int
    """The second up to which its requests are counted."""
    requests: dict[str, Requests] = field(default_factory=dict)
    """Release -> its requests so far."""


class Traffic(Collector):
    """Simulated requests to the MLServices of every simulated spoke (pure: the objects as
    watched come in, counts come out; ``collect`` makes them Prometheus metrics).

    A second of traffic costs nothing when it passes (``tick``): each route's requests are
    counted when someone looks (``requests``, a scrape) or before its route changes, all the
    seconds since its last count at once, which gives the same counts as second by second
    (fractions are carried either way). Ticked route by route it cost 11.8 us a route: 1.9 s
    of every second at 160,000 MLServices (10,000 CRs x 16 spokes)."""

    def __init__(self) -> None:
        self.seconds = 0
        """Seconds of traffic so far."""
        self._followed: dict[tuple[str, str, str], _Followed] = {}
        """(cluster, namespace, MLService) -> its route and requests."""

    @property
    def requests(self) -> dict[tuple[str, str, str, str], Requests]:
        """(cluster, namespace, MLService, release) -> its requests so far."""
        for one in self._followed.values():
            self._count(one)
        return {(*key, release): req for key, one in self._followed.items()
                for release, req in one.requests.items()}

    def _count(self, one: _Followed) -> None:
        seconds, one.counted = self.seconds - one.counted, self.seconds
        for release, percent in one.route.percents if seconds else ():
            if percent > 0:
                one.requests[release].serve(RATE * percent / 100 * seconds, one.route.knobs)

    def observe(self, cluster: str, obj: Obj) -> list[str]:
        """Follow the MLService as it is now; returns why any of its knobs is ignored."""
        key = (cluster, obj["metadata"]["namespace"], obj["metadata"]["name"])
        status = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        percents = tuple((r["name"], int(r.get("trafficPercent") or 0))
                         for r in status.get("releases") or []) if ready else ()
        obj_knobs, problems = knobs(obj)
        route = Route(percents, obj_knobs)
        one = self._followed.get(key)
        if one is None:
            one = self._followed[key] = _Followed(route, self.seconds)
        else:
            self._count(one)  # the seconds so far went by the route as it was
            one.route = route
        for release, _ in percents:  # both codes from the first scrape: a ratio has a numerator
            one.requests.setdefault(release, Requests())
        return problems

    def forget(self, cluster: str, namespace: str, name: str) -> None:
        """The MLService is gone, and so are its series."""
        self._followed.pop((cluster, namespace, name), None)

    def tick(self) -> None:
        """One second of traffic."""
        self.seconds += 1

    def collect(self) -> Iterator[Metric]:
        labels = ["cluster", "namespace", "mlservice", "release"]
        total = CounterMetricFamily("mlservice_requests", "Simulated requests answered, by code.",
                                    labels=[*labels, "code"])
        duration = HistogramMetricFamily("mlservice_request_duration_seconds",
                                         "Simulated request latency.", labels=labels)
        for key, req in self.requests.items():
            total.add_metric([*key, "200"], req.ok)
            total.add_metric([*key, "500"], req.errors)
            duration.add_metric(list(key), req.buckets(), req.seconds)
        yield total
        yield duration


class Simulator:
    """Watches MLServices on one spoke, reconciles their status and follows their traffic."""

    def __init__(self, client: ClusterClient, *, domain: str, delay: float,
                 traffic: Traffic) -> None:
        self.client, self.domain, self.delay, self.traffic = client, domain, delay, traffic
        self._pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._stale: set[tuple[str, str]] = set()
        """MLServices whose event came while their status write was under way: written again
        when it ends (that write may have read the object before the change)."""
        self.informer = Informer(client, MLSERVICE, on_event=self._on_event, transform=view)

    def _on_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            if old is not None:
                self.traffic.forget(self.client.name, old["metadata"]["namespace"],
                                    old["metadata"]["name"])
            return
        key = (new["metadata"]["namespace"], new["metadata"]["name"])
        problems = self.traffic.observe(self.client.name, new)
        if old is None or problems != knobs(old)[1]:
            for problem in problems:
                log.warning("simulator: %s/%s on %s: %s", *key, self.client.name, problem)
        want = desired_status(new, domain=self.domain, previous=new.get("status"), now="")
        if _comparable(want) == _comparable(new.get("status")):
            return
        if key in self._pending and not self._pending[key].done():
            self._stale.add(key)
            return
        self._pending[key] = asyncio.create_task(self.write_status(key))

    async def write_status(self, key: tuple[str, str]) -> None:
        """Write the status the object should have, again while an event came meanwhile (the
        object may have changed after it was read, and the event that said so, or the echo
        of this very write, found the write under way: a fix's MLService stayed not Ready for
        good in CI's soak of 2026-12-07, seed 671400724)."""
        await asyncio.sleep(self.delay)
        try:
            while True:  # an event before the write's read is read with it
                self._stale.discard(key)
                await self._write_status(key)
                if key not in self._stale:
                    return
        finally:
            self._pending.pop(key, None)
            self._stale.discard(key)

    async def _write_status(self, key: tuple[str, str]) -> None:
        """One status write; a failed write is tried again with backoff, as a controller
        requeues (the object does not change, so no later event would bring it back: an
        MLService stayed without status for 65 s after its spoke's API server was killed
        mid-write, in the full soak of 2026-12-07, seed 3182763439)."""
        backoff = max(self.delay, 0.1)
        for _ in range(WRITE_ATTEMPTS):
            try:
                current = await self.client.get(MLSERVICE, key[0], key[1])
                if current is None:
                    return
                status = desired_status(current, domain=self.domain,
                                        previous=current.get("status"), now=_now())
                await self.client.patch(MLSERVICE, key[0], key[1], {"status": status},
                                        subresource="status", field_manager="mlservice-simulator")
                log.info("simulator: %s/%s on %s -> Ready=%s", key[0], key[1],
                         self.client.name, status["conditions"][1]["status"])
                return
            except Exception as exc:
                log.warning("simulator: status of %s/%s failed (again in %.1fs): %s",
                            key[0], key[1], backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 5.0)


async def run(directory: Path, *, delay: float) -> None:
    """Run one simulator per spoke recorded in DIR/state.json until cancelled."""
    from hmls.domain.kubeconfig import vet
    from hmls_devenv.environment import Environment

    env = Environment(directory)
    state = env.state()
    traffic = Traffic()
    sims = []
    for c in state.clusters.values():
        if c.role != "spoke":
            continue
        cfg = vet(env.kubeconfig(c.name).read_bytes())
        client = await ClusterClient.from_kubeconfig(c.name, cfg)
        sims.append(Simulator(client, domain=state.cluster_domain.format(cluster=c.name),
                              delay=delay, traffic=traffic))
    metrics = await _serve(traffic, state.simulator_metrics_port)
    log.info("MLService simulator running for %s; metrics on %s",
             ", ".join(s.client.name for s in sims), env.simulator_metrics_url)
    try:
        async with asyncio.TaskGroup() as tg:
            for s in sims:
                tg.create_task(s.informer.run())
            tg.create_task(_generate(traffic))
    finally:
        await metrics.cleanup()
        for s in sims:
            await s.client.close()


async def _generate(traffic: Traffic) -> None:
    """A second of traffic every second, on a fixed schedule (a late tick is caught up)."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        due += 1
        await asyncio.sleep(max(0.0, due - loop.time()))
        traffic.tick()


async def _serve(traffic: Traffic, port: int) -> web.AppRunner:
    registry = CollectorRegistry()
    registry.register(traffic)

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/metrics", exposition)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
