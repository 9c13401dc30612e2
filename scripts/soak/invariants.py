"""Invariant checkers: each cadence reads the real servers (hub, every spoke, the ingress)
directly — never through the fault proxies — and counts violations of the promises users
buy hmls for.  A violation is counted once per episode (a continuous stretch of the same bad
state) and its evidence kept.

  nothing_lost     every desired object is on every target cluster with hmls's content,
                   at most LOST_S after the later of: it went wrong, the last fault that
                   touched its cluster healed, its HyperMLService last changed (+ the
                   rollout's own time for a progressive one)
  nothing_leaked   no object labelled with a HyperMLService's uid outlives the CR (or its
                   place in the CR) by LEAKED_S once its cluster is quiet; bystander
                   objects hmls did not create keep their resourceVersion
  status_honest    FullyApplied=True for generation g only while every object of g is on
                   its clusters; observedGeneration never goes backwards
  traffic_safe     no weight on a cluster that is not Ready or is cut off, and never 0 %
                   everywhere, while another cluster is healthy, for more than TRAFFIC_S
                   (judged while the hub and etcd are up and a replica has had a lease
                   term's time to act: without the hub hmls holds no leadership, by design)
  rollout_converges
                   every Progressive HyperMLService reaches its newest revision (the
                   ControllerRevision hmls recorded for its workloads as they are now):
                   ``status.rollout.currentRevision`` is it and every placed cluster's step is
                   at it and Done, within LOST_S + ``rollout_time`` after the later of: its
                   last change, the last fault on any of its clusters healed, hmls could act
                   again.  Not judged while it is paused or its newest revision is one the
                   driver made never Ready on purpose: that halt (or that wait) is the
                   promised behaviour and waits for a person; the driver's fix, undo or resume
                   is a change, and the bound applies again from it
  one_writer       no HyperMLService status write on the hub from a replica that did not
                   hold the Lease at that moment (from the hub's audit log, after the run)
  controller_up    no replica exit that the soak did not cause (a crash), and RSS flat
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults import GLOBAL, Injector
from hmls_devenv.audit import status_writers
from hmls_devenv.simulator import READY_KNOB
from pydantic import ValidationError

from hmls.domain.models import HASH_ANNOTATION, OWNER_UID, RolloutSpec
from hmls.kube.client import Obj

LOST_S = 30.0
LEAKED_S = 30.0
TRAFFIC_S = 10.0
DRIFT_GRACE_S = 15.0
"""A FullyApplied claim is not judged on an object drifted this recently (the claim may
predate the drift), counted from when hmls could act on its cluster again."""
STEP_S = 5.0
"""A progressive rollout step's own work besides its soak: the apply, the MLService turning
Ready (the simulator's delay), and the reconciles and status writes in between."""
EVIDENCE_LIMIT = 200

Key = tuple[str, str, str]
"""(kind, namespace, name) of a spoke object."""


def expected(manifest: Obj, namespace: str) -> Obj:
    """What the API server stores for a manifest, for comparison: stringData as data, and
    no apiVersion/kind (list items have none)."""
    out = {k: v for k, v in manifest.items() if k not in ("stringData", "apiVersion", "kind")}
    out["metadata"] = {**manifest["metadata"], "namespace": manifest["metadata"].get(
        "namespace") or namespace}
    if "stringData" in manifest:
        out["data"] = {**(manifest.get("data") or {}), **{
            k: base64.b64encode(v.encode()).decode() for k, v in manifest["stringData"].items()}}
    return out


def contains(live: Any, want: Any) -> bool:
    """Every field of ``want`` is in ``live`` with the same value (lists element-wise)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v)
                                              for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(live, list) and len(live) == len(want)
                and all(contains(a, b) for a, b in zip(live, want, strict=True)))
    return bool(live == want)


def difference(live: Any, want: Any, path: str = "") -> str:
    """Where ``contains(live, want)`` fails first: a field path and both values."""
    if isinstance(want, dict) and isinstance(live, dict):
        for k, v in want.items():
            if k not in live:
                return f"{path}.{k} missing"
            if not contains(live[k], v):
                return difference(live[k], v, f"{path}.{k}")
    elif isinstance(want, list) and isinstance(live, list) and len(live) == len(want):
        for i, (a, b) in enumerate(zip(live, want, strict=True)):
            if not contains(a, b):
                return difference(a, b, f"{path}[{i}]")
    return f"{path or '.'}: {json.dumps(live)[:120]} instead of {json.dumps(want)[:120]}"


def condition(obj: Obj, ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def desired(cr: Obj) -> list[tuple[str, Key, Obj]]:
    """(cluster, key, expected object) for every manifest of every workload."""
    ns = cr["metadata"]["namespace"]
    out = []
    for w in cr["spec"]["workloads"]:
        for m in w["manifests"]:
            want = expected(m, ns)
            key = (m["kind"], want["metadata"]["namespace"], m["metadata"]["name"])
            out += [(c, key, want) for c in w.get("clusters") or []]
    return out


def rollout_time(rollout: RolloutSpec, clusters: int) -> float:
    """How long a progressive rollout over healthy clusters takes at most: one step per
    cluster, ``maxConcurrency`` at once, each its ``soakSeconds`` and STEP_S.
    ``progressDeadlineSeconds`` does not enter: a step on a healthy cluster leaves Applying when
    its cluster is Ready, not at the deadline; only a revision that cannot be Ready waits for
    the deadline (and then halts), and in the soak those are the driver's deliberately bad
    ones, which the invariant excuses."""
    waves = math.ceil(clusters / rollout.concurrency(clusters)) if clusters else 0
    return waves * (rollout.soak_seconds + STEP_S)


def newest_revision(cr: Obj, revisions: list[Obj]) -> int | None:
    """The number of the ControllerRevision hmls recorded for the HyperMLService's workloads
    as they are now (after an undo: the earlier revision, renumbered); None before hmls has
    recorded them."""
    uid, workloads = cr["metadata"]["uid"], cr["spec"].get("workloads")
    for r in revisions:
        if ((r["metadata"].get("labels") or {}).get(OWNER_UID) == uid
                and (r.get("data") or {}).get("workloads") == workloads):
            number = r.get("revision")
            return number if isinstance(number, int) else None
    return None


def rolling(cr: Obj) -> bool:
    """A progressive rollout of the current generation has not finished: its clusters may
    rightly run an older revision, or none, until its own deadline (status_honest still
    judges every FullyApplied it claims)."""
    if ((cr["spec"].get("rollout") or {}).get("strategy") or "All") != "Progressive":
        return False
    done = condition(cr, "RolledOut")
    return not (done.get("status") == "True" and int(done.get("observedGeneration") or 0)
                == int(cr["metadata"].get("generation") or 0))


@dataclass
class Snapshot:
    started: float
    """monotonic time before the hub was read (spokes are read after it)"""
    at: float
    crs: list[Obj] | None
    spokes: dict[str, dict[Key, Obj] | None]
    routes: list[Obj] | None
    revisions: list[Obj] | None
    """the hub's ControllerRevisions (read after the HyperMLServices)"""


def _mlservice(cr: Obj, snap: Snapshot, cluster: str) -> Obj | None:
    """The HyperMLService's (first) MLService on the cluster as the spoke has it; None when
    it is not there (or the spoke was unreadable)."""
    ns = cr["metadata"]["namespace"]
    svc = next((m["metadata"]["name"] for w in cr["spec"]["workloads"]
                for m in w["manifests"] if m["kind"] == "MLService"), None)
    objs = snap.spokes.get(cluster)
    return objs.get(("MLService", ns, svc)) if objs and svc else None


def mlservice_ready(cr: Obj, snap: Snapshot, cluster: str) -> bool | None:
    """Whether that MLService is Ready, as the spoke says (None: not there)."""
    live = _mlservice(cr, snap, cluster)
    return None if live is None else condition(live, "Ready").get("status") == "True"


def mlservice_evidence(cr: Obj, snap: Snapshot, cluster: str) -> str:
    """What a stuck rollout's evidence needs of that MLService: Ready, the simulator's ready
    knob with the field managers that set it, the applied-hash."""
    live = _mlservice(cr, snap, cluster)
    if live is None:
        return "its MLService: not there or unreadable"
    meta = live["metadata"]
    annotations = meta.get("annotations") or {}
    setters = [m.get("manager") for m in meta.get("managedFields") or []
               if f'"f:{READY_KNOB}"' in json.dumps(m.get("fieldsV1") or {})]
    ready = condition(live, "Ready")
    return (f"its MLService Ready: {ready.get('status')} {ready.get('reason') or ''}, "
            f"knob {annotations.get(READY_KNOB)!r} set by {setters}, "
            f"applied-hash {annotations.get(HASH_ANNOTATION)}")


@dataclass
class Checker:
    injector: Injector
    changed: Mapping[str, float]
    """uid -> when the soak last created or edited that HyperMLService (monotonic)"""
    allowance: Mapping[str, float]
    """uid -> extra seconds its rollout may take (progressive HyperMLServices)"""
    drifted: Mapping[tuple[str, Key], float]
    """(cluster, key) -> when the soak drifted or deleted that object behind hmls's back"""
    bystanders: dict[tuple[str, Key], str]
    """(cluster, key) -> resourceVersion of an object hmls must never touch"""
    deliberate: Collection[str]
    """uids of the HyperMLServices whose newest revision the driver made never Ready on
    purpose (a rollout episode): their rollout may rightly wait or halt"""
    lease_seconds: float
    t0: float
    """monotonic time of the soak's start: evidence times are seconds since then"""
    violations: Counter[str] = field(default_factory=Counter)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    _bad: dict[tuple[str, Any], tuple[float, str, str]] = field(default_factory=dict)
    _reported: set[tuple[str, Any]] = field(default_factory=set)
    _max_gen: dict[str, int] = field(default_factory=dict)
    _gone: dict[str, float] = field(default_factory=dict)
    _claims: set[tuple[str, int, str, Key]] = field(default_factory=set)
    _touched: set[tuple[str, Any]] = field(default_factory=set)

    def violate(self, inv: str, now: float, **detail: Any) -> None:
        self.violations[inv] += 1
        if len(self.evidence) < EVIDENCE_LIMIT:
            self.evidence.append({"invariant": inv, "at": round(now - self.t0, 1), **detail})

    def _episode(self, inv: str, key: Any, bad: bool, now: float, floor: float | None,
                 limit: float, uid: str, detail: str) -> None:
        """A bad state that must end within ``limit`` of max(its start, floor); floor None
        means it is not judged now (a fault is still active)."""
        k = (inv, key)
        self._touched.add(k)
        if not bad:
            self._bad.pop(k, None)
            self._reported.discard(k)
            return
        since, _, _ = self._bad.setdefault(k, (now, uid, detail))
        if floor is not None and now - max(since, floor) > limit and k not in self._reported:
            self._reported.add(k)
            self.violate(inv, now, key=repr(key), detail=detail,
                         bad_for_s=round(now - since, 1))

    def _hold(self, inv: str, position: int, value: Any) -> None:
        """Keep the open episodes this cadence could not judge (their server was unreadable):
        those of ``inv`` whose key has ``value`` at ``position``."""
        self._touched.update(k for k in self._bad if k[0] == inv and k[1][position] == value)

    def open_episodes(self, now: float, but: Collection[str] = ()) -> list[str]:
        """Bad states still open (of the invariants not in ``but``), except those of
        HyperMLServices changed in the last 10 s (plus their rollout's time)."""
        return [f"{inv} since {since - self.t0:.0f}s: {detail}"
                for (inv, _), (since, uid, detail) in self._bad.items()
                if inv not in but
                and now - self.changed.get(uid, 0.0) > 10.0 + self.allowance.get(uid, 0.0)]

    # ----- one cadence -------------------------------------------------------------
    def check(self, snap: Snapshot) -> None:
        if snap.crs is None:
            return
        self._touched = set()
        live_uids = {cr["metadata"]["uid"]: cr for cr in snap.crs}
        for cr in snap.crs:
            self._status(cr, snap)
            if cr["metadata"].get("deletionTimestamp"):
                continue  # its objects and routes go: the leak check follows them
            if not rolling(cr):
                self._lost(cr, snap)
            if cr["spec"].get("traffic"):
                self._traffic(cr, snap)
            self._rollout(cr, snap)
        self._leaks(live_uids, snap)
        for k in set(self._bad) - self._touched:  # no longer wanted (CR gone, moved, fixed)
            del self._bad[k]
            self._reported.discard(k)
        self.checks["cycles"] += 1
        self.checks["objects"] += sum(len(s) for s in snap.spokes.values() if s)

    def _lost(self, cr: Obj, snap: Snapshot) -> None:
        uid = cr["metadata"]["uid"]
        ref = f"{cr['metadata']['namespace']}/{cr['metadata']['name']}"
        for cluster, key, want in desired(cr):
            objs = snap.spokes.get(cluster)
            if objs is None:  # unreadable this cadence: judged at the next
                self._touched.add(("nothing_lost", (uid, cluster, key)))
                continue
            live = objs.get(key)
            bad = live is None or not contains(live, want)
            how = "missing" if live is None else f"not as applied ({difference(live, want)})"
            quiet = self.injector.quiet_since(cluster)
            floor = None if quiet is None else max(
                quiet, self.changed.get(uid, 0.0) + self.allowance.get(uid, 0.0))
            self._episode("nothing_lost", (uid, cluster, key), bad, snap.at, floor, LOST_S, uid,
                          f"{ref}: {key[0]} {key[1]}/{key[2]} on {cluster} is {how}")

    def _leaks(self, live_uids: dict[str, Obj], snap: Snapshot) -> None:
        for cluster, objs in snap.spokes.items():
            if objs is None:
                self._hold("nothing_leaked", 1, cluster)
                continue
            for key, obj in objs.items():
                uid = (obj["metadata"].get("labels") or {}).get(OWNER_UID)
                if not uid or not key[1].startswith("soak-"):
                    continue
                cr = live_uids.get(uid)
                if cr is None:
                    since = self._gone.setdefault(uid, snap.at)
                    stray = True
                else:
                    since = self.changed.get(uid, 0.0)
                    stray = all((c, k) != (cluster, key) for c, k, _ in desired(cr))
                quiet = self.injector.quiet_since(cluster)
                floor = None if quiet is None else max(quiet, since)
                self._episode("nothing_leaked", (uid, cluster, key), stray, snap.at, floor,
                              LEAKED_S, uid, f"{key[0]} {key[1]}/{key[2]} on {cluster} "
                              f"outlives {'its HyperMLService' if cr is None else 'its place'}")
        for (cluster, key), rv in self.bystanders.items():
            objs = snap.spokes.get(cluster)
            if objs is None:
                continue
            live = objs.get(key)
            now_rv = live["metadata"]["resourceVersion"] if live else "(gone)"
            if now_rv != rv:
                self.violate("nothing_leaked", snap.at, key=repr((cluster, key)),
                             detail=f"bystander {key[0]} {key[1]}/{key[2]} on {cluster} touched: "
                                    f"resourceVersion {rv} -> {now_rv}")
                self.bystanders[(cluster, key)] = now_rv

    def _status(self, cr: Obj, snap: Snapshot) -> None:
        meta, status = cr["metadata"], cr.get("status") or {}
        uid, ref = meta["uid"], f"{meta['namespace']}/{meta['name']}"
        og = int(status.get("observedGeneration") or 0)
        if og < self._max_gen.get(uid, 0):
            self.violate("status_honest", snap.at, key=ref,
                         detail=f"observedGeneration went back from {self._max_gen[uid]} to {og}")
        self._max_gen[uid] = max(og, self._max_gen.get(uid, 0))
        full = condition(cr, "FullyApplied")
        gen = int(meta.get("generation") or 0)
        if (meta.get("deletionTimestamp") or full.get("status") != "True"
                or int(full.get("observedGeneration") or 0) != gen
                or self.changed.get(uid, 0.0) >= snap.started):
            return
        for cluster, key, want in desired(cr):
            objs = snap.spokes.get(cluster)
            if objs is None or self._drift_recent(cluster, key, snap.at):
                continue
            live = objs.get(key)
            claim = (uid, gen, cluster, key)
            if (live is None or not contains(live, want)) and claim not in self._claims:
                self._claims.add(claim)
                how = "missing" if live is None else f"not as applied ({difference(live, want)})"
                self.violate("status_honest", snap.at, key=ref,
                             detail=f"FullyApplied=True for generation {gen} but {key[0]} "
                                    f"{key[1]}/{key[2]} on {cluster} is {how}",
                             rollout=(cr.get("status") or {}).get("rollout"))

    def _drift_recent(self, cluster: str, key: Key, now: float) -> bool:
        """The soak drifted this object less than DRIFT_GRACE_S of hmls's working time ago:
        counted from when a replica could act on the cluster again (a claim written before
        the drift stays until someone can correct it)."""
        drifted = self.drifted.get((cluster, key))
        if drifted is None:
            return False
        acting, quiet = self._acting_since(), self.injector.quiet_since(cluster)
        return acting is None or quiet is None or now - max(drifted, acting, quiet) < DRIFT_GRACE_S

    def _traffic(self, cr: Obj, snap: Snapshot) -> None:
        uid = cr["metadata"]["uid"]
        if snap.routes is None:
            self._hold("traffic_safe", 0, uid)
            return
        ns = cr["metadata"]["namespace"]
        clusters = [c for w in cr["spec"]["workloads"] for c in w.get("clusters") or []]

        def healthy(cluster: str) -> bool:
            return not self.injector.cut(cluster) and mlservice_ready(cr, snap, cluster) is True

        good = {c for c in clusters if healthy(c)}
        vs = next((r for r in snap.routes
                   if (r["metadata"].get("labels") or {}).get(OWNER_UID) == uid), None)
        weights: dict[str, int] = {}
        for route in (vs or {}).get("spec", {}).get("http", [{}])[0].get("route", []):
            weights[route["destination"]["host"].split(".")[3]] = int(route.get("weight") or 0)
        floor = self._acting_since()
        ref = f"{ns}/{cr['metadata']['name']}"
        for c in clusters:
            bad = weights.get(c, 0) > 0 and c not in good and bool(good - {c})
            self._episode("traffic_safe", (uid, c), bad, snap.at, floor, TRAFFIC_S, uid,
                          f"{ref}: weight {weights.get(c)} on {c}, which is not healthy, "
                          f"while {sorted(good)} are")
        nothing = not any(weights.values()) and bool(good)
        said = condition(cr, "TrafficReady").get("message")
        self._episode("traffic_safe", (uid, "*"), nothing, snap.at, floor, TRAFFIC_S, uid,
                      f"{ref}: 0% everywhere while {sorted(good)} are healthy "
                      f"(TrafficReady: {said})")

    def _rollout(self, cr: Obj, snap: Snapshot) -> None:
        try:
            rollout = RolloutSpec.model_validate(cr["spec"].get("rollout") or {})
        except ValidationError:
            return
        if rollout.strategy != "Progressive":
            return
        meta = cr["metadata"]
        uid, ref = meta["uid"], f"{meta['namespace']}/{meta['name']}"
        if snap.revisions is None:  # unreadable this cadence: judged at the next
            self._touched.add(("rollout_converges", (uid,)))
            return
        placed = sorted({c for w in cr["spec"]["workloads"] for c in w.get("clusters") or []})
        newest = newest_revision(cr, snap.revisions)
        state = (cr.get("status") or {}).get("rollout") or {}
        steps = {s.get("cluster"): s for s in state.get("clusters") or [] if isinstance(s, dict)}
        behind = [f"{c} {(steps.get(c) or {}).get('phase', 'no step')} "
                  f"(revision {(steps.get(c) or {}).get('revision')}; "
                  f"{mlservice_evidence(cr, snap, c)})" for c in placed
                  if (steps.get(c) or {}).get("revision") != newest
                  or (steps.get(c) or {}).get("phase") != "Done"]
        current = state.get("currentRevision")
        bad = newest is None or current != newest or bool(behind)
        # the driver's doing: a paused rollout, or a revision that cannot be Ready (its halt
        # waits for a person); the resume, fix or undo that ends it is a change
        waiting = rollout.paused or uid in self.deliberate
        halted = f", halted: {state['halted']}" if state.get("halted") else ""
        self._episode("rollout_converges", (uid,), bad and not waiting, snap.at,
                      self._healthy_since(uid, placed), LOST_S + rollout_time(rollout, len(placed)),
                      uid, f"{ref}: newest revision {newest}, current {current}{halted}; "
                      f"behind: {', '.join(behind) or 'none'}")

    def _healthy_since(self, uid: str, clusters: list[str]) -> float | None:
        """From when a HyperMLService's rollout could proceed: its last change, every one of
        its clusters quiet, hmls able to act (None while any of them is not)."""
        since = [self._acting_since(), *(self.injector.quiet_since(c) for c in clusters)]
        if any(t is None for t in since):
            return None
        return max([self.changed.get(uid, 0.0), *(t for t in since if t is not None)])

    def _acting_since(self) -> float | None:
        """From when hmls could act: the hub, etcd and a replica back for a lease term."""
        relevant = [f for f in self.injector.faults if f.kind in GLOBAL]
        if any(f.healed is None for f in relevant):
            return None
        return max((f.healed for f in relevant if f.healed is not None), default=0.0) \
            + self.lease_seconds


# ----- one writer (after the run, from the hub's audit log) ----------------------------
def one_writer(audit_log: Path) -> tuple[int, list[dict[str, Any]], dict[str, int]]:
    """Status writes made by a replica that did not hold the Lease at that moment."""
    found = status_writers(audit_log)
    bad = [{"invariant": "one_writer", **w} for w in found.outside_term]
    return len(bad), bad[:EVIDENCE_LIMIT], {"terms": found.terms,
                                            "status_writes": found.status_writes}
