"""MLService simulator: plays T9k's MLService controller on each local spoke.

This is a SIMULATOR for tests and demos, not T9k's controller.  When an MLService appears or
its spec changes it writes, after ``delay`` seconds, the status shape of the HyperMLService
seed document: ``address.url``, ``Paused``/``Ready`` conditions, ``defaultRelease`` and
``releases[]`` (ready, readyReplicas, totalReplicas, trafficPercent, url).

Knob: the annotation ``simulator.hmls.tensorstack.dev/ready: "false"`` on an MLService makes
it go not-ready (Ready=False, readyReplicas 0); removing it or setting "true" recovers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from hmls.domain.models import timestamp
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import Resource
from hmls.kube.watching import Informer

READY_KNOB = "simulator.hmls.tensorstack.dev/ready"
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


def _comparable(status: Any) -> Any:
    if isinstance(status, dict):
        return {k: _comparable(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_comparable(v) for v in status]
    return status


WRITE_ATTEMPTS = 30
"""A status write is tried this often (backoff up to 5 s: about two minutes)."""


class Simulator:
    """Watches MLServices on one spoke and reconciles their status."""

    def __init__(self, client: ClusterClient, *, domain: str, delay: float) -> None:
        self.client, self.domain, self.delay = client, domain, delay
        self._pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.informer = Informer(client, MLSERVICE, on_event=self._on_event)

    def _on_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            return
        key = (new["metadata"]["namespace"], new["metadata"]["name"])
        want = desired_status(new, domain=self.domain, previous=new.get("status"), now="")
        if _comparable(want) == _comparable(new.get("status")):
            return
        if key in self._pending and not self._pending[key].done():
            return
        self._pending[key] = asyncio.create_task(self.write_status(key))

    async def write_status(self, key: tuple[str, str]) -> None:
        """Write the status the object should have; a failed write is tried again with
        backoff, as a controller requeues (the object does not change, so no later event
        would bring it back: an MLService stayed without status for 65 s after its spoke's
        API server was killed mid-write, in the full soak of 2026-12-07, seed 3182763439)."""
        await asyncio.sleep(self.delay)
        backoff = max(self.delay, 0.1)
        try:
            for _ in range(WRITE_ATTEMPTS):
                try:
                    current = await self.client.get(MLSERVICE, key[0], key[1])
                    if current is None:
                        return
                    status = desired_status(current, domain=self.domain,
                                            previous=current.get("status"), now=_now())
                    await self.client.patch(MLSERVICE, key[0], key[1], {"status": status},
                                            subresource="status",
                                            field_manager="mlservice-simulator")
                    log.info("simulator: %s/%s on %s -> Ready=%s", key[0], key[1],
                             self.client.name, status["conditions"][1]["status"])
                    return
                except Exception as exc:
                    log.warning("simulator: status of %s/%s failed (again in %.1fs): %s",
                                key[0], key[1], backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, 5.0)
        finally:
            self._pending.pop(key, None)
        # the object may have changed while we slept: the informer's next event re-checks


async def run(directory: Path, *, delay: float) -> None:
    """Run one simulator per spoke recorded in DIR/state.json until cancelled."""
    from hmls.devenv.environment import Environment
    from hmls.domain.kubeconfig import vet

    env = Environment(directory)
    state = env.state()
    sims = []
    for c in state.clusters.values():
        if c.role != "spoke":
            continue
        cfg = vet(env.kubeconfig(c.name).read_bytes())
        client = await ClusterClient.from_kubeconfig(c.name, cfg)
        sims.append(Simulator(client, domain=state.cluster_domain.format(cluster=c.name),
                              delay=delay))
    log.info("MLService simulator running for %s", ", ".join(s.client.name for s in sims))
    try:
        async with asyncio.TaskGroup() as tg:
            for s in sims:
                tg.create_task(s.informer.run())
    finally:
        for s in sims:
            await s.client.close()
