"""Chaos soak (``make soak``: 30 minutes; ``make soak-quick``: under 4, run by CI).

Starts the local environment (hub, 4 spokes, ingress; the hub writes an audit log), a TCP
fault proxy in front of each spoke (hmls reaches the spokes only through them), two
leader-elected controller replicas, and ~100 HyperMLServices of the seed's three manifests
(every fifth with ``spec.traffic``, every fifth a progressive rollout), created on the hub
only.  Then, for the duration, at the same time:

  driver      creates, edits (content, or moves to other clusters) and deletes
              HyperMLServices at a steady rate; and, on the progressive ones, rollout
              episodes (at most MAX_EPISODES at once), each a person's part in the
              README's "Progressive rollout":
                halt       a revision whose MLService never gets Ready (the simulator's
                           READY_KNOB in the manifest) with a short progressDeadlineSeconds:
                           it halts and rolls back; then a fix, or ``hmls rollout undo``
                supersede  such a revision with the default deadline, and a fix pushed while
                           its first step is still Applying: the controller supersedes the
                           step at once (a RolloutStepSuperseded Event)
                pause      ``hmls rollout pause``, a new revision it holds, and resume a few
                           seconds later, preferably on a HyperMLService whose clusters are
                           under a fault
  injector    random faults, overlapping (faults.py), from a seed printed first
  checker     reads every server each cadence and counts invariant violations
              (invariants.py; rollout_converges: every progressive HyperMLService reaches
              its newest revision on every placed cluster within a bound once its clusters
              are healthy, unless it is paused or its newest revision is deliberately bad)
  supervisor  restarts a replica that exited (as a Deployment would) and tells the exits
              the soak caused from crashes

Afterwards every fault is healed, what an episode left halted or paused is fixed or
resumed, the checker keeps going until the fleet has converged (violations still count), a
churn phase measures the leader's RSS per HyperMLService lifecycle, the hub's audit log is
checked for a second writer, and the report goes to OUT/<mode>.json and OUT/<mode>.md (with
the rollout episodes and the rollout Events the controller recorded).  The exit status is 1
when any invariant was violated: the seed and the violating objects are printed.

  PYTHONPATH=scripts/bench python scripts/soak/soak.py [--quick] [--seed N] [--minutes M]
      [--crs N] [--episode-gap S] [--dir DIR] [--out docs/soak]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from common import REPO, RUNTIMES, Bench, by_verb, linear_fit, log, machine_cpu, manifests, pct, proc_stats
from faults import PROBE_TIMEOUT_S, Injector, retrying
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, requests_delta
from hmls_devenv.proxy import FaultProxy
from hmls_devenv.simulator import MLSERVICE, READY_KNOB
from invariants import Checker, Key, Snapshot, condition, one_writer, rollout_time
from report import machine

from hmls.commands import cluster as cluster_cmd
from hmls.commands import rollout as rollout_cmd
from hmls.domain.kubeconfig import KubeconfigPolicy
from hmls.domain.models import API_VERSION, KIND, RolloutSpec
from hmls.kube import errors
from hmls.kube.client import Obj
from hmls.kube.resources import (
    CONFIGMAPS,
    CONTROLLER_REVISIONS,
    EVENTS,
    HMLS,
    SECRETS,
    Resource,
)

VS = Resource("networking.istio.io/v1beta1", "VirtualService", "virtualservices", namespaced=True)
NAMESPACES_USED = [f"soak-{i}" for i in range(4)]
PREMADE = NAMESPACES_USED[:2]
"""Spoke namespaces the soak makes (with bystanders); hmls creates the others."""
CHURN_NS = "soak-churn"
SECRET_NS = "hmls-system"
LEASE_SECONDS = 15.0
SOAK_SECONDS = 3
CADENCE = 2.0
READ_TIMEOUT = 4.0
RSS_LIMIT_KB = {"quick": 3.0, "full": 2.0}
"""Growth of the leader's RSS per HyperMLService lifecycle in the churn phase (fitted over
the second half of the rounds) above which the controller counts as leaking; the quick run's
30 rounds end while the allocator still settles (it levels off by round ~40)."""
DEADLINE_S = 600
"""progressDeadlineSeconds of a progressive HyperMLService (the default, written out so that
the fix after a halting episode restores it): far above any fault's hold, so that only a
deliberately bad revision halts (a halt waits for a person: one caused by a fault would stop
the rollout for good)."""
HALT_DEADLINE_S = 6
"""progressDeadlineSeconds while a halting episode's bad revision is the newest."""
EPISODES = ("halt", "supersede", "pause")
MAX_EPISODES = 2
"""Rollout episodes under way at once (each holds one progressive HyperMLService)."""
HALT_WAIT_S = 45.0
"""How long a halting episode waits to see its halt (faults may delay it) before fixing."""
UNFINISHED_WAIT_S = 30.0
"""How long a superseding episode waits for a step of its bad revision under way."""
PAUSE_S = (5.0, 20.0)
UNFINISHED = ("Draining", "Applying", "Soaking")
ROLLOUT_EVENTS = ("RolloutStep", "RolloutStepFailed", "RolloutStepSuperseded", "RolloutHalted",
                  "RolledOut")


@dataclass
class CR:
    name: str
    namespace: str
    kind: str  # plain | traffic | progressive
    clusters: list[str]
    uid: str = ""
    version: int = 0
    bad: bool = False
    """Its newest revision's MLService never gets Ready (a rollout episode's doing)."""
    halting: bool = False
    """With HALT_DEADLINE_S: the bad revision halts soon."""
    paused: bool = False
    busy: bool = False
    """In a rollout episode: the driver's other actions leave it alone."""


@dataclass
class Replica:
    ctl: Controller
    held: bool = False
    killed: bool = False
    exited_at: float = 0.0
    log_offset: int = 0
    lives: list[dict[str, Any]] = field(default_factory=list)


class World:
    """The fleet under test, and every action the driver and the injector take on it."""

    def __init__(self, bench: Bench, rng: random.Random, *, crs: int) -> None:
        self.b = bench
        self.env: Environment = bench.env
        self.rng = rng
        self.target = crs
        self.proxies: dict[str, FaultProxy] = {}
        self.replicas: dict[str, Replica] = {}
        self.live: dict[str, CR] = {}
        self.changed: dict[str, float] = {}
        self.allowance: dict[str, float] = {}
        self.drifted: dict[tuple[str, Key], float] = {}
        self.bystanders: dict[tuple[str, Key], str] = {}
        self.ops: Counter[str] = Counter()
        self.rollouts: Counter[str] = Counter()
        self.deliberate: set[str] = set()
        """uids of the CRs whose newest revision is deliberately bad (for the checker)"""
        self.exits: Counter[str] = Counter()
        self.crashes: list[dict[str, Any]] = []
        self.rss: list[tuple[float, str, int, float]] = []
        self._serial = 0
        self.hub_kubeconfig = str(self.env.kubeconfig("hub"))
        """For the in-process CLI operations (``hmls rollout undo/pause``)."""

    def spokes(self) -> list[str]:
        return self.b.spokes

    @contextlib.contextmanager
    def changing(self, uids: list[str]) -> Iterator[None]:
        """Marks the HyperMLServices as changing while a write to them is in flight (a check
        that reads them meanwhile is stale: the server may apply the write before it answers)
        and as changed at the answer (a failed write may still have landed)."""
        for uid in uids:
            self.changed[uid] = math.inf
        try:
            yield
        finally:
            now = time.monotonic()
            for uid in uids:
                self.changed[uid] = now

    # ----- setup ---------------------------------------------------------------------
    async def setup(self) -> None:
        for s in self.spokes():
            proxy = FaultProxy(s, self.env.state().clusters[s].port)
            await proxy.start()
            self.proxies[s] = proxy
        hub = str(self.env.kubeconfig("hub"))
        await asyncio.gather(*(self.register(s, variant=0) for s in self.spokes()),
                             cluster_cmd.join("ingress", hub=hub,
                                      cluster_kubeconfig=str(self.env.kubeconfig("ingress")),
                                      namespace=SECRET_NS, policy=KubeconfigPolicy(),
                                      as_is=True, trusted=True))
        for ns in [*NAMESPACES_USED, CHURN_NS]:
            await self.b.namespace(ns, ["hub"])
        for s in self.spokes():
            for ns in PREMADE:
                await self.b.namespace(ns, [s])
                for res, body in ((CONFIGMAPS, {"data": {"owner": "somebody else"}}),
                                  (SECRETS, {"stringData": {"token": "not hmls's"}})):
                    obj = await self.b.clients[s].create(res, ns, {
                        "apiVersion": "v1", "kind": res.kind,
                        "metadata": {"name": "bystander", "namespace": ns}, **body})
                    key = (res.kind, ns, "bystander")
                    self.bystanders[(s, key)] = obj["metadata"]["resourceVersion"]

    def kubeconfig_via_proxy(self, cluster: str, variant: int) -> Path:
        """The spoke's kubeconfig pointing at its proxy; context names vary with ``variant``
        so that a rotation writes new bytes."""
        cfg = yaml.safe_load(self.proxies[cluster].kubeconfig(
            self.env.kubeconfig(cluster).read_text()))
        name = f"{cluster}-v{variant}"
        cfg["contexts"][0]["name"] = cfg["current-context"] = name
        path = self.env.dir / "proxied" / f"{name}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(cfg))
        return path

    async def register(self, cluster: str, *, variant: int) -> None:
        await cluster_cmd.join(cluster, hub=str(self.env.kubeconfig("hub")),
                       cluster_kubeconfig=str(self.kubeconfig_via_proxy(cluster, variant)),
                       namespace=SECRET_NS, policy=KubeconfigPolicy(), as_is=True, trusted=True)

    async def corrupt_registration(self, cluster: str) -> None:
        junk = base64.b64encode(b"apiVersion: v1\nclusters: [not a kubeconfig\n").decode()
        await self.b.hub.patch(SECRETS, SECRET_NS, f"cluster-{cluster}",
                               {"data": {"kubeconfig": junk}}, field_manager="soak")

    # ----- replicas ------------------------------------------------------------------
    def start_replicas(self, count: int) -> None:
        flags = ("--leader-elect", "--lease-seconds", str(LEASE_SECONDS),
                 "--probe-interval", "2", "--probe-timeout", str(PROBE_TIMEOUT_S))
        for i in range(count):
            name = f"controller-{'ab'[i]}"
            ctl = Controller(self.env, *flags, namespaces=[*NAMESPACES_USED, CHURN_NS], name=name)
            self.replicas[name] = Replica(ctl)
            self._start(self.replicas[name])

    def _start(self, r: Replica) -> None:
        path = self.env.log_path(r.ctl.name)
        r.log_offset = path.stat().st_size if path.exists() else 0
        r.killed = False
        r.ctl.start(wait=False)
        r.lives.append({"pid": r.ctl.pid, "started": time.monotonic()})

    async def supervise(self) -> None:
        """Restart exited replicas (1 s back-off), and classify each exit."""
        while True:
            for name, r in self.replicas.items():
                if r.ctl.pid and not r.ctl.running():
                    with self.env.log_path(name).open("rb") as f:
                        f.seek(r.log_offset)
                        tail = f.read().decode(errors="replace")
                    cause = ("killed" if r.killed else
                             "lost_leadership" if "stopping: lost Lease" in tail else "crash")
                    self.exits[cause] += 1
                    r.lives[-1].update(ended=time.monotonic(), cause=cause)
                    if cause == "crash":
                        self.crashes.append({"replica": name, "log_tail": tail[-3000:]})
                    r.ctl.stop()  # reaps it
                    r.exited_at = time.monotonic()
                if not r.ctl.pid and not r.held and time.monotonic() - r.exited_at > 1.0:
                    self._start(r)
            await asyncio.sleep(0.5)

    async def leader(self) -> str | None:
        for name, r in self.replicas.items():
            if r.ctl.pid:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        text = await asyncio.to_thread(r.ctl.metrics_text)
                    if "\nhmls_leader 1.0" in text:
                        return name
        return None

    async def kill_controller(self, leader: bool) -> str:
        running = [n for n, r in self.replicas.items() if r.ctl.pid]
        if not running:
            raise RuntimeError("no replica is running")
        name = (await self.leader() if leader else None) or self.rng.choice(running)
        r = self.replicas[name]
        r.held, r.killed = True, True
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.ctl.pid, signal.SIGKILL)
        return name

    def hold_controller(self, name: str, held: bool) -> None:
        self.replicas[name].held = held

    async def sample_rss(self) -> None:
        while True:
            for name, r in self.replicas.items():
                with contextlib.suppress(OSError):
                    if r.ctl.pid:
                        self.rss.append((time.monotonic(), name, r.ctl.pid,
                                         proc_stats(r.ctl.pid).rss_mb))
            await asyncio.sleep(5.0)

    # ----- HyperMLServices -----------------------------------------------------------
    def _body(self, cr: CR) -> Obj:
        objs = manifests(3, cr.namespace, cr.name)
        objs[0]["spec"]["releases"][0]["predictor"]["model"]["modelUri"] = \
            f"s3://models/{cr.name}/v{cr.version}/"
        if cr.bad:
            objs[0]["metadata"].setdefault("annotations", {})[READY_KNOB] = "false"
        spec: Obj = {"workloads": [{"clusters": cr.clusters, "manifests": objs}]}
        if cr.kind == "traffic":
            spec["traffic"] = {"ingressCluster": "ingress"}
        if cr.kind == "progressive":
            spec["rollout"] = {"strategy": "Progressive", "soakSeconds": SOAK_SECONDS,
                               "progressDeadlineSeconds":
                                   HALT_DEADLINE_S if cr.halting else DEADLINE_S}
        return {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": cr.name, "namespace": cr.namespace}, "spec": spec}

    def _pair(self) -> list[str]:
        return sorted(self.rng.sample(self.spokes(), 2))

    async def create(self) -> None:
        i = self._serial
        self._serial += 1
        kind = {0: "traffic", 1: "progressive"}.get(i % 5, "plain")
        cr = CR(f"soak-{i}", NAMESPACES_USED[i % len(NAMESPACES_USED)], kind, self._pair())
        body = self._body(cr)
        obj = await self.b.hub.create(HMLS, cr.namespace, body)
        cr.uid = obj["metadata"]["uid"]
        self.changed[cr.uid] = time.monotonic()
        if kind == "progressive":
            self.allowance[cr.uid] = rollout_time(
                RolloutSpec.model_validate(body["spec"]["rollout"]), len(cr.clusters))
        self.live[cr.name] = cr
        self.ops["create"] += 1

    def _idle(self) -> list[CR]:
        return [c for c in self.live.values() if not c.busy]

    async def _write(self, cr: CR, spec: Obj) -> None:
        with self.changing([cr.uid]):
            await self.b.hub.patch(HMLS, cr.namespace, cr.name, {"spec": spec},
                                   field_manager="soak")

    async def edit(self, *, move: bool) -> None:
        cr = self.rng.choice(self._idle())
        if move:
            cr.clusters = self._pair()
        cr.version += 1
        await self._write(cr, self._body(cr)["spec"])
        self.ops["move" if move else "edit"] += 1

    async def delete(self) -> None:
        cr = self.rng.choice(self._idle())
        del self.live[cr.name]
        with self.changing([cr.uid]):
            await self.b.hub.delete(HMLS, cr.namespace, cr.name)
        self.ops["delete"] += 1

    async def populate(self, timeout: float) -> float:
        started = time.monotonic()
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem:
                await self.create()
        await asyncio.gather(*(one() for _ in range(self.target)))
        while time.monotonic() - started < timeout:
            crs = await self.read_crs()
            done = sum(1 for c in crs or [] if condition(c, "FullyApplied").get("status") == "True")
            if done >= self.target:
                return time.monotonic() - started
            await asyncio.sleep(1.0)
        raise TimeoutError(f"only {done} of {self.target} HyperMLServices FullyApplied "
                           f"after {timeout:.0f}s")

    async def drive(self, rate: float) -> None:
        """One user action about every 1/rate seconds."""
        while True:
            await asyncio.sleep(self.rng.expovariate(rate))
            op = ("create" if len(self.live) < self.target else
                  self.rng.choices(["edit", "move", "delete"], weights=[5, 2, 3])[0])
            try:
                if op == "create":
                    await self.create()
                elif op == "delete":
                    await self.delete()
                else:
                    await self.edit(move=op == "move")
            except errors.KubeError as exc:
                self.ops[f"{op}_failed"] += 1
                log(f"driver: {op} failed: {exc.message}")

    # ----- rollout episodes ------------------------------------------------------------
    async def episodes(self, rng: random.Random, gap: float, injector: Injector) -> None:
        """A rollout episode on an idle progressive HyperMLService about every ``gap``
        seconds (or when one of MAX_EPISODES under way ends), the kinds in turn (the quick run
        has room for a few: each kind gets its turn); its own random stream, so that the
        driver's stays as it was."""
        tasks: set[asyncio.Task[None]] = set()
        turn = rng.randrange(len(EPISODES))
        try:
            while True:
                await asyncio.sleep(rng.expovariate(1 / gap))
                while len(tasks) >= MAX_EPISODES:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                pool = [c for c in self._idle() if c.kind == "progressive"]
                if not pool:
                    continue
                kind, turn = EPISODES[turn % len(EPISODES)], turn + 1
                if kind == "pause":  # during a fault on one of its clusters, when there is one
                    pool = [c for c in pool if any(f.affects(cluster) for f in injector.active()
                                                   for cluster in c.clusters)] or pool
                cr = rng.choice(pool)
                cr.busy = True
                task = asyncio.create_task(self._episode(kind, cr, rng))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _episode(self, kind: str, cr: CR, rng: random.Random) -> None:
        log(f"rollout episode {kind} on {cr.namespace}/{cr.name}")
        try:
            if kind == "halt":
                await self._halt(cr, rng)
            elif kind == "supersede":
                await self._supersede(cr)
            else:
                await self._pause(cr, rng)
        except Exception as exc:  # servers down past the retries: settled now, or at the end
            self.rollouts[f"{kind}_failed"] += 1
            log(f"rollout episode {kind} on {cr.name} failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self.settle(cr)
        cr.busy = False

    async def _bad_revision(self, cr: CR, *, halting: bool) -> None:
        """Push a revision whose MLService never gets Ready (marked deliberate first: the
        write may land before it answers)."""
        cr.version += 1
        cr.bad, cr.halting = True, halting
        self.deliberate.add(cr.uid)
        await retrying(lambda: self._write(cr, self._body(cr)["spec"]))

    async def _fix(self, cr: CR) -> None:
        """Push a good revision (and the default deadline): the rollout must converge.  The
        CR counts as bad until the write has answered (a settle after a cancel fixes it)."""
        cr.version += 1
        spec = self._body(replace(cr, bad=False, halting=False))["spec"]
        await retrying(lambda: self._write(cr, spec))
        cr.bad = cr.halting = False
        self.deliberate.discard(cr.uid)
        self.rollouts["fix"] += 1

    async def _halt(self, cr: CR, rng: random.Random) -> None:
        """Halt, then the person's part: a fix and ``hmls rollout undo`` in turn."""
        await self._bad_revision(cr, halting=True)
        self.rollouts["halt"] += 1
        halted = await self._await_rollout(cr, lambda r: bool(r.get("halted")), HALT_WAIT_S)
        if halted is None:
            self.rollouts["halt_unseen"] += 1
            await self._fix(cr)
            return
        self.rollouts["halted"] += 1
        undo = self.rollouts["halted"] % 2 == 1
        await asyncio.sleep(rng.uniform(0.0, 5.0))  # let some of the rollback happen
        await (self._undo(cr) if undo else self._fix(cr))

    async def _undo(self, cr: CR) -> None:
        """``hmls rollout undo`` to the revision before the bad one (good by construction: an
        episode always ends on a good revision), the default deadline restored first (the
        undone-to revision must not halt on a fault); a fix if the undo fails."""
        cr.halting = False
        await retrying(lambda: self._write(cr, {"rollout": self._body(cr)["spec"]["rollout"]}))
        try:
            with self.changing([cr.uid]):
                await rollout_cmd.rollout_undo(f"{cr.namespace}/{cr.name}", hub=self.hub_kubeconfig,
                                       to_revision=None)
        except Exception as exc:  # not repeatable (a second undo goes further back): fix
            self.rollouts["undo_failed"] += 1
            log(f"rollout undo of {cr.name} failed ({type(exc).__name__}: {exc}); fixing")
            await self._fix(cr)
            return
        obj = await retrying(lambda: self.b.hub.get(HMLS, cr.namespace, cr.name))
        if obj is None:
            raise RuntimeError("gone during its episode (the driver deletes only idle CRs)")
        workload = obj["spec"]["workloads"][0]
        cr.clusters = sorted(workload["clusters"])
        knob = (workload["manifests"][0]["metadata"].get("annotations") or {}).get(READY_KNOB)
        if knob == "false":  # not what the construction promises: say so, and fix
            self.rollouts["undo_to_bad"] += 1
            await self._fix(cr)
            return
        cr.bad = False
        self.deliberate.discard(cr.uid)
        self.rollouts["undo"] += 1

    async def _supersede(self, cr: CR) -> None:
        await self._bad_revision(cr, halting=False)
        self.rollouts["supersede"] += 1
        unfinished = await self._await_rollout(cr, lambda r: any(
            s.get("phase") in UNFINISHED and r.get("currentRevision") in (
                s.get("revision"), s.get("targetRevision"))
            for s in r.get("clusters") or []), UNFINISHED_WAIT_S)
        await self._fix(cr)
        if unfinished is not None:
            self.rollouts["fix_over_unfinished_step"] += 1

    async def _pause(self, cr: CR, rng: random.Random) -> None:
        await self._set_paused(cr, True)
        cr.version += 1  # a revision for the pause to hold
        await retrying(lambda: self._write(cr, self._body(cr)["spec"]))
        await asyncio.sleep(rng.uniform(*PAUSE_S))
        await self._set_paused(cr, False)

    async def _set_paused(self, cr: CR, paused: bool) -> None:
        """``hmls rollout pause`` / ``resume`` (idempotent: retried)."""
        async def once() -> None:
            with self.changing([cr.uid]):
                await rollout_cmd.rollout_pause(f"{cr.namespace}/{cr.name}", hub=self.hub_kubeconfig,
                                        paused=paused)
        cr.paused = cr.paused or paused  # a write that fails may still land
        await retrying(once)
        cr.paused = paused
        self.rollouts["pause" if paused else "resume"] += 1

    async def settle(self, cr: CR) -> None:
        """End what an episode left: resume a paused rollout, fix a bad revision."""
        if cr.paused:
            await self._set_paused(cr, False)
        if cr.bad:
            await self._fix(cr)

    async def settle_all(self) -> None:
        await asyncio.gather(*(self.settle(cr) for cr in self.live.values()))
        for cr in self.live.values():
            cr.busy = False

    async def _await_rollout(self, cr: CR, done: Callable[[Obj], bool], timeout: float
                             ) -> Obj | None:
        """``status.rollout`` once the controller has observed the spec as it is and ``done``
        holds for it; None if not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = await self._read(self.b.hub.get(HMLS, cr.namespace, cr.name))
            status = (obj or {}).get("status") or {}
            rollout = status.get("rollout") or {}
            if (obj is not None and status.get("observedGeneration")
                    == obj["metadata"].get("generation") and done(rollout)):
                return dict(rollout)
            await asyncio.sleep(0.5)
        return None

    async def rollout_events(self) -> dict[str, int]:
        """The rollout Events the controller recorded on the soak's HyperMLServices."""
        try:
            async with asyncio.timeout(60):
                listed, _ = await self.b.hub.list(EVENTS)
        except (errors.KubeError, TimeoutError) as exc:
            log(f"rollout Events unreadable: {type(exc).__name__}: {exc}")
            return {}
        found = Counter(e.get("reason") for e in listed
                        if e["metadata"]["namespace"] in NAMESPACES_USED
                        and e.get("reason") in ROLLOUT_EVENTS)
        return {str(k): v for k, v in sorted(found.items())}

    # ----- behind hmls's back ----------------------------------------------------------
    def _somewhere(self, prefer_traffic: bool = False) -> tuple[CR, str] | None:
        pool = list(self.live.values())
        if prefer_traffic and self.rng.random() < 0.7:
            pool = [c for c in pool if c.kind == "traffic"] or pool
        if not pool:
            return None
        cr = self.rng.choice(pool)
        return cr, self.rng.choice(cr.clusters)

    async def drift(self, *, delete: bool) -> tuple[str, str] | None:
        where = self._somewhere()
        if where is None:
            return None
        cr, cluster = where
        client = self.b.clients[cluster]
        choices: list[tuple[Resource, str, Obj]] = [
            (MLSERVICE, f"svc-{cr.name}", {"spec": {"default": "tampered"}}),
            (SECRETS, f"s3-{cr.name}", {"stringData": {".s3cfg": "host_base = evil.example\n"}}),
            (RUNTIMES, f"rt-{cr.name}", {"spec": {"enabled": False}})]
        res, name, patch = self.rng.choice(choices)
        self.drifted[(cluster, (res.kind, cr.namespace, name))] = time.monotonic()
        if delete:
            await client.delete(res, cr.namespace, name)
        else:
            await client.patch(res, cr.namespace, name, patch, field_manager="soak-tamper")
        return cluster, f"{'deleted' if delete else 'edited'} {res.kind} {cr.namespace}/{name}"

    async def set_ready(self, ready: bool, where: tuple[str, str] | None = None
                        ) -> tuple[str, str] | None:
        if where is None:
            found = self._somewhere(prefer_traffic=True)
            if found is None:
                return None
            where = (found[1], f"{found[0].namespace}/svc-{found[0].name}")
        cluster, ref = where
        ns, name = ref.split("/")
        with contextlib.suppress(errors.NotFound):  # deleted meanwhile: nothing to heal
            await self.b.clients[cluster].patch(
                MLSERVICE, ns, name,
                {"metadata": {"annotations": {READY_KNOB: None if ready else "false"}}},
                field_manager="soak-sim")
        return where

    # ----- reading the truth -----------------------------------------------------------
    async def _read(self, coro: Any) -> Any:
        try:  # asyncio.timeout: wait_for can swallow the checker's cancel (hmls.kube.watching)
            async with asyncio.timeout(READ_TIMEOUT):
                return await coro
        except (errors.KubeError, TimeoutError):
            return None

    async def read_crs(self) -> list[Obj] | None:
        got = await self._read(self.b.hub.list(HMLS))
        return None if got is None else [c for c in got[0]
                                         if c["metadata"]["namespace"].startswith("soak-")]

    async def _spoke(self, cluster: str) -> dict[Key, Obj] | None:
        out: dict[Key, Obj] = {}
        for res in (MLSERVICE, RUNTIMES, SECRETS, CONFIGMAPS):
            got = await self._read(self.b.clients[cluster].list(res))
            if got is None:
                return None
            for o in got[0]:
                if o["metadata"]["namespace"].startswith("soak-"):
                    out[(res.kind, o["metadata"]["namespace"], o["metadata"]["name"])] = o
        return out

    async def snapshot(self) -> Snapshot:
        started = time.monotonic()
        crs = await self.read_crs()
        spokes = await asyncio.gather(*(self._spoke(s) for s in self.spokes()))
        routes = await self._read(self.b.clients["ingress"].list(VS))
        revisions = await self._read(self.b.hub.list(CONTROLLER_REVISIONS))
        return Snapshot(started, time.monotonic(), crs, dict(zip(self.spokes(), spokes, strict=True)),
                        None if routes is None else routes[0],
                        None if revisions is None else [
                            r for r in revisions[0]
                            if r["metadata"]["namespace"] in NAMESPACES_USED])


async def check_loop(world: World, checker: Checker, injector: Injector) -> None:
    while True:
        snap = await world.snapshot()
        checker.check(snap)
        # a fault has converged when every object is as applied and every route safe (a
        # rollout's own time after a heal is the rollout invariant's business)
        still = checker.open_episodes(snap.at, but=("rollout_converges",))
        whole = snap.crs is not None and all(v is not None for v in snap.spokes.values())
        for f in injector.faults:
            if f.healed is not None and f.converged is None:
                if whole and not still:
                    f.converged = snap.at
                else:
                    f.blockers = still[:3] if whole else ["a server was unreadable"]
        await asyncio.sleep(max(0.0, CADENCE - (time.monotonic() - snap.started)))


async def churn(world: World, rounds: int, crs: int) -> dict[str, Any]:
    """Rounds of create ``crs`` / all FullyApplied / delete all / all gone, with the leader's
    RSS after each; the growth per lifecycle over the second half (the first warms the
    allocator up: RSS climbs, then levels off)."""
    leader = None
    for _ in range(120):  # the last fault may have left a handover under way
        leader = await world.leader()
        if leader is not None:
            break
        await asyncio.sleep(0.5)
    if leader is None:
        return {"error": "no leader for 60 s"}
    pid = world.replicas[leader].ctl.pid
    hub = world.b.hub
    points = []
    for rnd in range(rounds):
        bodies = [{"apiVersion": API_VERSION, "kind": KIND,
                   "metadata": {"name": f"churn-{rnd}-{i}", "namespace": CHURN_NS},
                   "spec": {"workloads": [{"clusters": world.spokes()[:2], "manifests": [{
                       "apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": f"churn-{i}"}, "data": {"round": str(rnd)}}]}]}}
                  for i in range(crs)]
        await world.b.create_all(bodies)
        for _ in range(240):
            items, _ = await hub.list(HMLS, namespace=CHURN_NS)
            if sum(condition(c, "FullyApplied").get("status") == "True" for c in items) >= crs:
                break
            await asyncio.sleep(0.5)
        with world.changing([item["metadata"]["uid"] for item in items]):
            await hub.request("DELETE", HMLS.path(CHURN_NS))
        for _ in range(240):
            items, _ = await hub.list(HMLS, namespace=CHURN_NS)
            if not items:
                break
            await asyncio.sleep(0.5)
        if world.replicas[leader].ctl.pid != pid:
            return {"error": f"{leader} restarted during the churn phase"}
        points.append(((rnd + 1) * crs, proc_stats(pid).rss_mb * 1024))
        log(f"churn round {rnd + 1}/{rounds}: RSS {points[-1][1] / 1024:.1f} MB")
    warm = points[len(points) // 2:]
    fit = linear_fit([float(x) for x, _ in warm], [y for _, y in warm])
    return {"replica": leader, "crs_per_round": crs, "rounds": rounds,
            "rss_kb": [round(y) for _, y in points],
            "growth_kb_per_lifecycle": round(fit["slope"], 3)}


def rss_lives(world: World) -> list[dict[str, Any]]:
    out = []
    for name, r in world.replicas.items():
        for life in r.lives:
            pts = [(t, mb) for t, n, pid, mb in world.rss if n == name and pid == life["pid"]]
            if len(pts) >= 4:
                out.append({"replica": name, "pid": life["pid"], "samples": len(pts),
                            "first_mb": round(pts[0][1], 1), "last_mb": round(pts[-1][1], 1),
                            "max_mb": round(max(mb for _, mb in pts), 1),
                            "seconds": round(pts[-1][0] - pts[0][0])})
    return out


async def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    mode = "quick" if args.quick else "full"
    minutes = args.minutes or (1.5 if args.quick else 30.0)
    crs = args.crs or (60 if args.quick else 100)
    print(f"soak seed {seed} ({mode}: {minutes} min, {crs} HyperMLServices); replay with "
          f"--seed {seed}", flush=True)
    rng = random.Random(seed)  # the faults' stream; the driver has its own, so that the
    # fault sequence (kinds, targets, holds, gaps) replays exactly
    env = Environment(Path(args.dir), log=log)
    env.down()
    t0 = time.monotonic()
    await asyncio.to_thread(env.up, spokes=4, audit=True)
    b = Bench(env, quick=args.quick)
    await b.open()
    world = World(b, random.Random(seed + 1), crs=crs)
    injector = Injector(world, rng, mean_gap=args.fault_gap or (6.0 if args.quick else 12.0),
                        log=log)
    checker = Checker(injector, world.changed, world.allowance, world.drifted, world.bystanders,
                      world.deliberate, lease_seconds=LEASE_SECONDS, t0=t0)
    result: dict[str, Any] = {"seed": seed, "mode": mode, "minutes": minutes, "crs": crs,
                              "machine": machine()}
    try:
        await world.setup()
        world.start_replicas(2)
        background = [asyncio.create_task(world.supervise()),
                      asyncio.create_task(world.sample_rss())]
        populated = await world.populate(timeout=180)
        log(f"{crs} HyperMLServices FullyApplied in {populated:.1f}s; faults start")
        result["populate_s"] = round(populated, 1)
        before_req, cpu0 = await b.requests(), machine_cpu()
        chaos = [asyncio.create_task(injector.run()),
                 asyncio.create_task(world.drive(args.rate or (1.0 if args.quick else 0.5))),
                 asyncio.create_task(world.episodes(
                     random.Random(seed + 2), args.episode_gap or (10.0 if args.quick else 20.0),
                     injector))]
        background.append(asyncio.create_task(check_loop(world, checker, injector)))
        await asyncio.sleep(minutes * 60)
        for t in chaos:
            t.cancel()
        await asyncio.gather(*chaos, return_exceptions=True)
        await injector.heal_all()
        await world.settle_all()
        healed = time.monotonic()
        log("faults healed, rollout episodes settled; waiting for convergence")
        while time.monotonic() - healed < 90:
            await asyncio.sleep(CADENCE)
            if not checker.open_episodes(time.monotonic()):
                break
        result["final_convergence_s"] = round(time.monotonic() - healed, 1)
        result["open_at_end"] = checker.open_episodes(time.monotonic())[:20]
        result["rollouts"] = {"episodes": dict(world.rollouts),
                              "events": await world.rollout_events()}
        after_req, cpu1 = await b.requests(), machine_cpu()
        result["churn"] = await churn(world, args.churn_rounds or (30 if args.quick else 60), 50)
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for r in world.replicas.values():
            await r.ctl.halt()
        writes_bad, writes_evidence, terms = one_writer(env.audit_log)
        checker.violations["one_writer"] += writes_bad
        checker.evidence += writes_evidence
        checker.violations["controller_up"] += world.exits["crash"]
        churned = result["churn"]
        churned["limit_kb"] = RSS_LIMIT_KB["quick" if args.quick else "full"]
        if "error" in churned or churned["growth_kb_per_lifecycle"] > churned["limit_kb"]:
            checker.violate("controller_up", time.monotonic(), key="rss",
                            detail=f"churn: {churned}")
        conv = [f.converged - f.healed for f in injector.faults
                if f.converged is not None and f.healed is not None]
        result.update({
            "faults": dict(Counter(f.kind for f in injector.faults)),
            "convergence_s": {"n": len(conv), "unconverged": len(injector.faults) - len(conv),
                              **({"p50": round(pct(conv, 50), 1), "p99": round(pct(conv, 99), 1),
                                  "max": round(max(conv), 1)} if conv else {})},
            "violations": {inv: checker.violations[inv] for inv in (
                "nothing_lost", "nothing_leaked", "status_honest", "traffic_safe",
                "rollout_converges", "one_writer", "controller_up")},
            "evidence": checker.evidence,
            "checks": dict(checker.checks),
            "lease": terms,
            "driver": dict(world.ops),
            "replica_exits": dict(world.exits),
            "crashes": world.crashes,
            "rss": rss_lives(world),
            "requests": {c: by_verb(v) for c, v in requests_delta(after_req, before_req).items()},
            "machine_busy_pct": round(100 * (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1e-9), 1),
            "fault_log": [f.to_json(t0) for f in injector.faults],
            "wall_s": round(time.monotonic() - t0, 1),
        })
    finally:
        for p in world.proxies.values():
            await p.close()
        await b.close()
        await asyncio.to_thread(env.down)
    write_report(Path(args.out), mode, result)
    bad = sum(result.get("violations", {}).values())
    if bad:
        print(f"soak FAILED (seed {seed}): {result['violations']}", file=sys.stderr)
        for e in result["evidence"][:30]:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(f"soak passed (seed {seed}): {len(injector.faults)} faults, 0 violations")
    return 0


def write_report(out: Path, mode: str, r: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{mode}.json").write_text(json.dumps(r, indent=2) + "\n")
    conv = r.get("convergence_s", {})
    rollouts = r.get("rollouts", {})
    lines = [
        f"# hmls chaos soak ({mode})", "",
        f"Seed {r['seed']} (replay: `make soak{'-quick' if mode == 'quick' else ''} "
        f"SOAK_FLAGS=\"--seed {r['seed']}\"`), {r['minutes']} minutes of faults against "
        f"{r['crs']} HyperMLServices on 4 spokes, 2 leader-elected replicas; "
        f"wall {r.get('wall_s')} s. Machine: {r['machine']}.", "",
        "## Violations (target 0)", "", "| invariant | violations |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in r.get("violations", {}).items()), "",
        "## Faults injected", "", "| fault | count |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(r.get("faults", {}).items())), "",
        f"Convergence after a fault healed (first cadence with every object as applied and "
        f"every route safe): p50 {conv.get('p50')} s, p99 {conv.get('p99')} s, max "
        f"{conv.get('max')} s over {conv.get('n')} faults ({conv.get('unconverged')} not "
        f"converged before the next fault's end). After the last heal: "
        f"{r.get('final_convergence_s')} s.", "",
        f"Driver: {r.get('driver')}. Replica exits: {r.get('replica_exits')}. Lease: "
        f"{r.get('lease')}. Machine busy {r.get('machine_busy_pct')} % during the faults.", "",
        "## Rollout episodes (progressive HyperMLServices)", "",
        "halt: a revision never Ready, progressDeadlineSeconds "
        f"{HALT_DEADLINE_S}, halted (seen in the status), then a fix or `hmls rollout undo`; "
        "supersede: such a revision with the default deadline and a fix while its step is "
        "unfinished; pause: pause, a revision, resume.", "",
        "| episode step | count |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(rollouts.get("episodes", {}).items())), "",
        "Rollout Events the controller recorded on the soak's HyperMLServices: "
        + (", ".join(f"{k} {v}" for k, v in rollouts.get("events", {}).items()) or "none")
        + ".", "",
        "## Churn (leader RSS per HyperMLService lifecycle)", "",
        f"{r.get('churn')}", "",
        "## Requests during the faults, by server and verb", "",
        *(f"- {c}: {v}" for c, v in r.get("requests", {}).items()), "",
    ]
    if r.get("evidence"):
        lines += ["## Evidence", "", *(f"- {e}" for e in r["evidence"][:50]), ""]
    (out / f"{mode}.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--minutes", type=float, help="fault phase (default 30; quick 1.5)")
    p.add_argument("--crs", type=int, help="HyperMLServices (default 100; quick 60)")
    p.add_argument("--rate", type=float, help="driver actions per second (default 0.5; quick 1)")
    p.add_argument("--fault-gap", type=float, help="mean seconds between faults (12; quick 6)")
    p.add_argument("--episode-gap", type=float,
                   help="mean seconds between rollout episodes (20; quick 10)")
    p.add_argument("--churn-rounds", type=int, help="rounds of 50 lifecycles (60; quick 30)")
    p.add_argument("--dir", default=str(REPO / ".hmls-env" / "soak"))
    p.add_argument("--out", default=str(REPO / "docs" / "soak"))
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
