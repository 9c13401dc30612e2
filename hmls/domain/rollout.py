"""Progressive rollout: the pure state machine of steps.

A revision is a numbered version of ``spec.workloads`` (kept on the hub as a
ControllerRevision).  With ``spec.rollout.strategy: Progressive`` each cluster runs one
revision, and moves to another in a **step**: ``Draining`` (its HeadIngress weight goes to 0;
skipped without ``spec.traffic``), ``Applying`` (the step's revision is applied; the cluster
must be Ready within ``progressDeadlineSeconds`` of the apply), ``Soaking`` (Ready for
``soakSeconds``, still without traffic), then ``Done`` (traffic back).  At most
``maxConcurrency`` steps run at once, in ``order``.  A step that misses its deadline is
``Failed``; more than ``maxFailures`` halt the rollout of that revision: no further cluster
starts it, and with ``autoRollback`` every cluster that got it takes a step back (as many at
once as ``maxConcurrency`` allows) to the last revision that was Ready everywhere, ending
``RolledBack``.  A lone cluster is updated in place (there is no other cluster to take its
traffic).  A tolerated failure (within ``maxFailures``) that turns Ready later is
stepped again, so it ends Done.

A new revision **supersedes** every unfinished step at once, as a Deployment's new
ReplicaSet does: a Draining step drains for the new revision instead, an Applying or Soaking
one (its cluster already drained) applies the new revision, its deadline counting from then;
clusters not yet started start on the new revision; and the halt of an older revision is
cleared.

``begin`` starts one reconcile's rollout (``Rollout.runs``: which revision each cluster is
rendered at); ``Rollout.finish`` takes what that reconcile observed and returns the next
state.  Everything a step needs is in the state, which the reconciler keeps in
``status.rollout``: a restarted controller resumes where the last one was, and applies
nothing twice.

Invariants (checked after every transition by the stateful property test,
tests/unit/test_rollout_machine.py):

1. Once some revision has been Ready everywhere, a step starts only while fewer than
   ``maxConcurrency`` clusters are in one (Draining, Applying, Soaking; a lowered
   ``maxConcurrency`` lets the steps under way finish).  Before that there is nothing to
   protect: the first revision goes everywhere at once.
2. ``halted`` always concerns the current revision; a new revision clears it.
3. A cluster is only ever rendered at the revision it ran, the current one, or (rolling
   back) the last good one; and never at a revision that no longer exists (its objects would
   be pruned).
4. A rollback targets only a revision that was Ready on every cluster.
5. With traffic, a step never drains the last serving cluster: a cluster that serves starts
   draining (or, in a step, is held out) only while another cluster outside a step serves or
   is Ready.
6. Liveness: once every placed cluster stays Ready (on a revision that can be Ready) long
   enough, and the rollout is neither paused nor halted at its current revision, the current
   revision reaches every cluster and becomes the last good one (``RolledOut`` True).
7. A reconcile asks to be run again at once only when a step moved (the worker honours that
   even while the HyperMLService fails elsewhere: it must not loop).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hmls.domain import analysis
from hmls.domain.conditions import Condition
from hmls.domain.models import MetricSpec, RolloutSpec, parse_timestamp, timestamp
from hmls.domain.notices import Notice
from hmls.domain.wire import mappings, number, opt_text, text

PENDING, DRAINING, APPLYING, SOAKING = "Pending", "Draining", "Applying", "Soaking"
RECHECK_S = 1.0
"""How soon a cluster whose objects a reconcile wrote is looked at again."""
DONE, FAILED, ROLLED_BACK = "Done", "Failed", "RolledBack"
ACTIVE = frozenset({DRAINING, APPLYING, SOAKING})
HALTED, PAUSED, INCONCLUSIVE = "Halted", "Paused", "AnalysisInconclusive"
"""RolledOut reasons: the rollout of the current revision halted; paused by its user; a
step waits for its metrics' data."""


@dataclass(frozen=True)
class Step:
    """One cluster's place in the rollout (an item of ``status.rollout.clusters``)."""

    cluster: str
    revision: int | None
    """The revision the cluster runs (None: nothing applied yet)."""
    phase: str
    since: dt.datetime | None
    """When it entered its phase (None: not recorded; the planner takes it as now)."""
    target: int | None = None
    """While Draining: the revision the step will apply (it runs ``revision`` until then)."""
    started: dt.datetime | None = None
    """When the step began (its drain), then when its revision began to be applied: the
    progress deadline counts from there."""
    analysis: tuple[analysis.Tally, ...] = ()
    """Soaking under ``spec.rollout.analysis``: each metric's measurements since the step
    began to soak; kept as the cluster's last analysis until its next analysed soak."""

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cluster": self.cluster, "phase": self.phase}
        if self.since is not None:
            out["since"] = timestamp(self.since)
        if self.revision is not None:
            out["revision"] = self.revision
        if self.target is not None:
            out["targetRevision"] = self.target
        if self.started is not None:
            out["stepStarted"] = timestamp(self.started)
        if self.analysis:
            out["analysis"] = [t.to_status() for t in self.analysis]
        return out

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> Step:
        return cls(text(raw.get("cluster")), number(raw.get("revision")),
                   opt_text(raw.get("phase")) or PENDING, _time(raw.get("since")),
                   number(raw.get("targetRevision")), _time(raw.get("stepStarted")),
                   tuple(analysis.Tally.from_status(t) for t in mappings(raw.get("analysis"))))


def _time(value: Any) -> dt.datetime | None:
    try:
        return parse_timestamp(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class State:
    """``status.rollout``, read."""

    current: int | None = None
    last_good: int | None = None
    halted: str | None = None
    """Why the rollout of ``current`` halted (cleared by a new revision)."""
    steps: Mapping[str, Step] = field(default_factory=dict)

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> State:
        raw = raw or {}
        steps = [Step.from_status(s) for s in mappings(raw.get("clusters"))]
        return cls(number(raw.get("currentRevision")), number(raw.get("lastGoodRevision")),
                   opt_text(raw.get("halted")), {s.cluster: s for s in steps if s.cluster})

    def to_status(self, order: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary(self, order),
                               "clusters": [self.steps[c].to_status() for c in order
                                            if c in self.steps]}
        if self.current is not None:
            out["currentRevision"] = self.current
        if self.last_good is not None:
            out["lastGoodRevision"] = self.last_good
        if self.halted:
            out["halted"] = self.halted
        return out

    def renumbered(self, aliases: Mapping[int, int]) -> State:
        """The state with revisions that were renumbered (an edit back to earlier workloads
        makes that revision the newest, under a new number) called by their new numbers."""
        if not aliases or not self.referenced() & aliases.keys():
            return self

        def new(number: int | None) -> int | None:
            return aliases.get(number, number) if number is not None else None
        def phase(step: Step) -> str:
            """Under the new number: a step that failed under the old one is not a failure
            of the new revision (it is tried again), and a cluster rolled back to it runs
            the new revision, Done."""
            if step.revision not in aliases:
                return step.phase
            return {FAILED: PENDING, ROLLED_BACK: DONE}.get(step.phase, step.phase)

        # workloads that came back are a new revision: the halt of the old number is over
        return State(new(self.current), new(self.last_good),
                     None if self.current in aliases else self.halted,
                     {c: replace(s, revision=new(s.revision), phase=phase(s),
                                 target=new(s.target)) for c, s in self.steps.items()})

    def referenced(self) -> set[int]:
        """Revisions the state still needs (never garbage-collected)."""
        out = {r for r in (self.current, self.last_good) if r is not None}
        for s in self.steps.values():
            out.update(r for r in (s.revision, s.target) if r is not None)
        return out


@dataclass(frozen=True)
class Seen:
    """What one reconcile observed of a cluster."""

    ready: bool
    """Every item applied and Ready, none of them written by this reconcile (a just-written
    object's status says nothing yet about the new revision)."""
    serving: bool = False
    """The HeadIngress gives it traffic (effective weight > 0) as last written to the
    ingress cluster."""
    written: bool = False
    """This reconcile wrote some of the cluster's objects: its readiness is looked at again
    shortly (nothing else need happen: an object whose status does not change sends no
    event)."""


@dataclass(frozen=True)
class Finished:
    cluster: str
    result: str
    """done, failed, rolled_back, superseded"""
    seconds: float


@dataclass(frozen=True)
class Plan:
    state: State
    drained: frozenset[str]
    condition: Condition
    requeue_after: float | None
    events: list[Notice]
    finished: list[Finished]


def clusters_in_order(spec: RolloutSpec, clusters: list[str]) -> list[str]:
    """``order`` first (those of it that are targets), then the rest as the workloads list them."""
    first = [c for c in spec.order if c in clusters]
    return first + [c for c in clusters if c not in first]


def summary(state: State, order: list[str]) -> str:
    """One line for ``kubectl get hmls``: how many clusters run the current revision, and what
    is moving."""
    steps = [state.steps[c] for c in order if c in state.steps]
    done = sum(1 for s in steps if s.revision == state.current and s.phase == DONE)
    moving = [f"{s.cluster} {s.phase}" for s in steps if s.phase in ACTIVE | {FAILED}]
    text = f"{done}/{len(steps)} at revision {state.current}"
    if state.halted:
        text += " (halted)"
    return text + (": " + ", ".join(moving[:3]) if moving else "")


class Rollout:
    """One reconcile's rollout: ``begin`` it before rendering (``runs`` says which revision
    each cluster is rendered at), ``finish`` it with what the reconcile observed."""

    def __init__(self, spec: RolloutSpec, state: State, clusters: list[str], current: int,
                 unchanged: set[str], known: set[int], traffic: bool, now: dt.datetime
                 ) -> None:
        self.spec, self.clusters, self.current = spec, clusters, current
        self.now = now
        self.traffic = traffic and len(clusters) > 1
        """Steps drain their cluster: there is traffic, and another cluster to take it (a
        lone cluster is updated in place)."""
        self.seen: Mapping[str, Seen] = {}
        self.measured: Mapping[str, Sequence[analysis.Measurement]] = {}
        self.starved: list[str] = []
        """Steps waiting for their metrics' data, with why."""
        self.events: list[Notice] = []
        self.finished: list[Finished] = []
        self.waits: list[float] = []
        self.urgent = False
        self.blocked = ""
        first = state.current is None
        self.halted = state.halted if state.current == current else None
        self.last_good = state.last_good if state.last_good in known else None
        self.steps: dict[str, Step] = {}
        for c in clusters:
            st = state.steps.get(c) or Step(c, None, PENDING, now)
            if st.since is None:
                st = replace(st, since=now)
            if st.revision is not None and st.revision not in known:
                # deleted behind hmls's back: it cannot be rendered, the cluster moves on
                st = Step(c, None, PENDING, now)
            if first:  # the first revision recorded goes everywhere at once (nothing to protect)
                st = Step(c, current, APPLYING, now, current, now)
            elif st.phase in ACTIVE:
                st = self._supersede(st, same=c in unchanged)
            elif st.revision != current:
                if c in unchanged:
                    st = Step(c, current, DONE, now)  # renders the same: nothing to roll
                elif self.halted is None and st.phase != PENDING:
                    st = Step(c, st.revision, PENDING, now, analysis=st.analysis)
            self.steps[c] = st

    def _supersede(self, st: Step, *, same: bool) -> Step:
        """A step under way, carried on: towards the current revision, or (rolling back) the
        last good one.  A step towards anything else is superseded by the current revision at
        once, its cluster kept out of traffic, its deadline counting from now; unless the
        revision the cluster is at renders as the current one (``same``): then an Applying or
        Soaking step goes on as the current revision's, and a Draining cluster has nothing
        left to roll."""
        aim = st.target if st.target is not None else st.revision
        if aim == self.current or (self.halted is not None and aim == self.last_good):
            return st
        if same and st.phase == DRAINING:
            return Step(st.cluster, self.current, DONE, self.now, analysis=st.analysis)
        if same:
            return replace(st, revision=self.current, target=self.current)
        began = self._began(st)
        self.finished.append(Finished(st.cluster, "superseded",
                                      (self.now - began).total_seconds()))
        self._event("Normal", "RolloutStepSuperseded",
                    f"{st.cluster}: the step to revision {aim} is superseded by revision "
                    f"{self.current}")
        self.urgent = True
        if st.phase == DRAINING and st.revision is not None:
            return Step(st.cluster, st.revision, DRAINING, self.now, self.current, self.now,
                        analysis=st.analysis)
        return Step(st.cluster, self.current, APPLYING, self.now, self.current, self.now,
                    analysis=st.analysis)

    # ----- one step ---------------------------------------------------------------------
    def _began(self, st: Step) -> dt.datetime:
        """When the step began: its progress deadline counts from here."""
        return st.started or st.since or self.now

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Notice(type_, reason, message))

    def _finish(self, st: Step, phase: str, result: str) -> Step:
        began = self._began(st)
        self.finished.append(Finished(st.cluster, result, (self.now - began).total_seconds()))
        return Step(st.cluster, st.revision, phase, self.now, analysis=st.analysis)

    def _advance(self, st: Step, final: str) -> Step:
        seen = self.seen.get(st.cluster, Seen(False))
        if st.phase == DRAINING:
            # the HeadIngress is being applied without it; a cluster that is not Ready has
            # nothing to protect (and keeps its routes only when no cluster is healthy).  A
            # drain still waiting is looked at again on an event or the backoff, not at once:
            # the HeadIngress kept it only because no other cluster could take its traffic
            # (TrafficReady False), and "at once" for as long as that lasts is a hot loop
            if self.traffic and seen.serving and seen.ready:
                return st
            self.urgent = True
            self._event("Normal", "RolloutStep", f"{st.cluster}: applying revision {st.target}")
            # the deadline counts from the apply: a drain that waited (the HeadIngress could not
            # be updated) does not eat into the time the new revision has to get Ready
            return Step(st.cluster, st.target, APPLYING, self.now, st.target, self.now,
                        analysis=st.analysis)
        started = self._began(st)
        deadline = started + dt.timedelta(seconds=self.spec.progress_deadline_seconds)
        if st.phase == APPLYING:
            if seen.ready:
                gate = self.spec.analysis if final == DONE else None  # a forward step
                if self.spec.soak_seconds == 0 and gate is None:
                    return self._complete(st, final)
                # the soak's end, or its first measurement
                self.waits.append(min(self.spec.soak_seconds, gate.interval_seconds)
                                  if gate else self.spec.soak_seconds)
                analysed = gate is not None
                return Step(st.cluster, st.revision, SOAKING, self.now, st.target, started,
                            analysis=() if analysed else st.analysis)
            if self.now >= deadline and not seen.written:  # judged on what it was seen do
                self._event("Warning", "RolloutStepFailed",
                            f"{st.cluster}: revision {st.revision} not Ready within "
                            f"{self.spec.progress_deadline_seconds}s")
                return self._finish(st, FAILED, "failed")
            left = (deadline - self.now).total_seconds()
            self.waits.append(min(left, RECHECK_S) if seen.written else left)
            return st
        if st.phase == SOAKING:
            if not seen.ready:
                self.waits.append(max(0.0, (deadline - self.now).total_seconds()))
                return Step(st.cluster, st.revision, APPLYING, self.now, st.target, started,
                            analysis=st.analysis)
            left = self.spec.soak_seconds - (self.now - (st.since or self.now)).total_seconds()
            if self.spec.analysis is not None and final == DONE:
                return self._analyse(st, left)
            if left > 0:
                self.waits.append(left)
                return st
            return self._complete(st, final)
        return st

    def _analyse(self, st: Step, left: float) -> Step:
        """A forward step soaking under metric analysis: this reconcile's measurements
        counted; Done once the soak is over and every metric succeeded in it, Failed past a
        metric's failureLimit."""
        spec = self.spec.analysis
        assert spec is not None
        measured = self.measured.get(st.cluster, ())
        st = replace(st, analysis=analysis.record(st.analysis, measured))
        limits = {m.name: m.inconclusive_limit for m in spec.metrics}
        for m in measured:
            if m.result == analysis.FAILED:
                self._event("Warning", "AnalysisFailed",
                            f"{st.cluster}: revision {st.revision}: metric {m.metric}: "
                            f"{m.message}")
            tally = next(t for t in st.analysis if t.metric == m.metric)
            if m.result == analysis.INCONCLUSIVE and tally.inconclusive == limits.get(m.metric):
                self._event("Warning", "AnalysisInconclusive",
                            f"{st.cluster}: revision {st.revision}: metric {m.metric} "
                            f"inconclusive {tally.inconclusive} times in a row: {m.message}")
        verdict = analysis.verdict(spec, st.analysis)
        if verdict.failed:
            self._event("Warning", "RolloutStepFailed",
                        f"{st.cluster}: revision {st.revision}: analysis failed: "
                        f"{verdict.failed}")
            return self._finish(st, FAILED, "failed")
        if verdict.waiting:
            self.starved.append(f"{st.cluster}: {verdict.waiting}")
        elif left <= 0 and verdict.passed:
            return self._complete(st, DONE)
        # the next measurement (never sooner than a recheck: this reconcile measured what
        # was due), or the end of the soak
        soaking_since = st.since or self.now
        self.waits.append(min([max(RECHECK_S, analysis.next_due(spec, st.analysis, self.now,
                                                                soaking_since)),
                               *([left] if left > 0 else [])]))
        return st

    def due(self) -> dict[str, tuple[int, list[MetricSpec]]]:
        """The clusters whose metrics are due now, each with the revision it soaks: forward
        steps soaking under ``spec.rollout.analysis`` (a rollback is judged on readiness
        alone)."""
        spec = self.spec.analysis
        if spec is None:
            return {}
        out = {}
        for c, st in self.steps.items():
            if st.phase == SOAKING and st.revision == self.current and self.halted is None:
                metrics = analysis.due(spec, st.analysis, self.now, st.since or self.now)
                if metrics:
                    out[c] = (self.current, metrics)
        return out

    def _complete(self, st: Step, final: str) -> Step:
        self._event("Normal", "RolloutStep", f"{st.cluster}: revision {st.revision} "
                    + ("Ready, traffic restored" if self.traffic else "Ready"))
        return self._finish(st, final, "done" if final == DONE else "rolled_back")

    # ----- the rollout ------------------------------------------------------------------
    def _start(self, st: Step, target: int) -> Step:
        self.urgent = True
        if self.traffic:
            self._event("Normal", "RolloutStep",
                        f"{st.cluster}: draining for revision {target}")
            return Step(st.cluster, st.revision, DRAINING, self.now, target, self.now,
                        analysis=st.analysis)
        self._event("Normal", "RolloutStep", f"{st.cluster}: applying revision {target}")
        return Step(st.cluster, target, APPLYING, self.now, target, self.now, analysis=st.analysis)

    def _would_strand(self, cluster: str) -> bool:
        """Draining this cluster would leave no cluster serving (while it serves now).  A
        cluster that serves, or is Done and Ready (this reconcile's HeadIngress gives it its
        traffic back, in the same update that drains this one), counts."""
        if not self.traffic or not self.seen.get(cluster, Seen(False)).serving:
            return False
        return not self._elsewhere(cluster)

    def _elsewhere(self, cluster: str) -> bool:
        """Another cluster can take this one's traffic: one outside a step that serves, or
        is Done and Ready."""
        def available(other: str) -> bool:
            seen, step = self.seen.get(other, Seen(False)), self.steps[other]
            return step.phase not in ACTIVE and (seen.serving or (seen.ready
                                                                  and step.phase == DONE))
        return any(available(o) for o in self.clusters if o != cluster)

    def runs(self) -> dict[str, int | None]:
        """The revision each cluster is rendered at in this reconcile: the one it runs (a
        Draining cluster still runs its old one)."""
        return {c: s.revision for c, s in self.steps.items()}

    def _rolling_back(self) -> bool:
        return self.halted is not None and self.spec.auto_rollback \
            and self.last_good is not None and self.last_good != self.current

    def _wanting(self) -> tuple[list[str], int | None]:
        """The clusters that want a step, in the order they get one, and its revision:
        forward to the current revision, or (rolling back) back to the last good one, the
        failed clusters first."""
        if self.halted is None:
            return [c for c in self.clusters if self.steps[c].phase == PENDING or (
                self.steps[c].phase == FAILED and self.steps[c].revision == self.current
                and self.seen.get(c, Seen(False)).ready)], self.current
        if not self._rolling_back():
            return [], None
        bad = [c for c in self.clusters if self.steps[c].revision == self.current
               and self.steps[c].phase not in ACTIVE]
        return sorted(bad, key=lambda c: self.steps[c].phase != FAILED), self.last_good

    def finish(self, seen: Mapping[str, Seen],
               measured: Mapping[str, Sequence[analysis.Measurement]] | None = None) -> Plan:
        """The next state from what this reconcile observed: ``seen`` per cluster, and the
        measurements of the metrics ``due`` said were due."""
        self.seen, self.measured = seen, measured or {}
        for c in self.clusters:
            st = self.steps[c]
            if st.phase in ACTIVE:
                back = self.halted is not None and st.target == self.last_good
                self.steps[c] = self._advance(st, ROLLED_BACK if back else DONE)
        failures = [c for c in self.clusters if self.steps[c].phase == FAILED
                    and self.steps[c].revision == self.current]
        if self.halted is None and len(failures) > self.spec.max_failures:
            self._halt(failures)
        wanting, target = self._wanting()
        if wanting and target is not None and not self.spec.paused:
            slots = self.spec.concurrency(len(self.clusters)) - sum(
                1 for c in self.clusters if self.steps[c].phase in ACTIVE)
            stranding = []
            for c in wanting:
                if slots <= 0:
                    break
                if self._would_strand(c):  # another cluster may go first and serve
                    stranding.append(c)
                    continue
                self.steps[c] = self._start(self.steps[c], target)
                slots -= 1
            if stranding and slots > 0 and not any(
                    self.steps[c].phase in ACTIVE for c in self.clusters):
                self.blocked = (f"waiting: draining {stranding[0]} would leave no healthy "
                                "cluster serving traffic")
        # the last good revision: Done on every cluster and Ready there, seen so now (a
        # cluster the revision renders the same on is Done at once, Ready or not)
        if self.clusters and all(
                self.steps[c].revision == self.current and self.steps[c].phase == DONE
                and self.seen.get(c, Seen(False)).ready for c in self.clusters):
            if self.last_good != self.current:
                self._event("Normal", "RolledOut", f"revision {self.current} is Ready on every "
                            "cluster")
            self.last_good = self.current
        state = State(self.current, self.last_good, self.halted, self.steps)
        drained = frozenset(c for c in self.clusters if self.traffic and self._drained(
            self.steps[c]))
        requeue = 0.0 if self.urgent else (min(self.waits) if self.waits else None)
        return Plan(state, drained, self._condition(state), requeue, self.events, self.finished)

    def _drained(self, st: Step) -> bool:
        """Held out of the HeadIngress: a cluster in a step, except one soaking under metric
        analysis (its metrics need its share of real requests) and, as invariant 5 has it,
        one that serves while no other cluster can take its traffic (the first revision
        starts everywhere at once: a serving HyperMLService made Progressive had all its
        clusters held out, its routes kept only because none was left, TrafficReady False);
        and one whose analysis failed at the current revision (its requests fail the
        service's objectives).  A Draining step is held out: it began while another cluster
        could serve, and ends once the HeadIngress dropped it."""
        if st.phase == FAILED:
            return st.revision == self.current and bool(self._failed_analysis(st))
        if st.phase not in ACTIVE:
            return False
        if st.phase == SOAKING and self.spec.analysis is not None \
                and st.revision == self.current and self.halted is None:
            return False
        return st.phase == DRAINING or not self.seen.get(st.cluster, Seen(False)).serving \
            or self._elsewhere(st.cluster)

    def _failed_analysis(self, st: Step) -> str | None:
        """Why the step's metric analysis failed, if it did."""
        if self.spec.analysis is None or not st.analysis:
            return None
        return analysis.verdict(self.spec.analysis, st.analysis).failed

    def _halt(self, failures: list[str]) -> None:
        late = [c for c in failures if not self._failed_analysis(self.steps[c])]
        why = [f"{', '.join(late)} not Ready within {self.spec.progress_deadline_seconds}s"
               ] if late else []
        why += [f"{c} failed its analysis ({self._failed_analysis(self.steps[c])})"
                for c in failures if c not in late]
        self.halted = f"revision {self.current} halted: " + "; ".join(why)
        back = self._rolling_back()
        self._event("Warning", "RolloutHalted", self.halted + (
            f"; rolling back to revision {self.last_good}" if back else ""))
        for c in self.clusters:
            st = self.steps[c]
            if st.phase == DRAINING:  # it never got the halted revision
                self.steps[c] = Step(c, st.revision, PENDING, self.now, analysis=st.analysis)
            elif back and st.phase in ACTIVE:  # drained already: straight back
                assert self.last_good is not None
                self.finished.append(Finished(c, "superseded", (
                    self.now - self._began(st)).total_seconds()))
                self._event("Normal", "RolloutStep", f"{c}: applying revision {self.last_good}")
                self.steps[c] = Step(c, self.last_good, APPLYING, self.now, self.last_good,
                                     self.now, analysis=st.analysis)
                self.urgent = True

    def _condition(self, state: State) -> Condition:
        if self.halted:
            return Condition("RolledOut", "False", HALTED, self.halted + (
                f"; clusters rolled back to revision {self.last_good}" if self.spec.auto_rollback
                and self.last_good not in (None, self.current) else ""))
        behind = [f"{c} {self.steps[c].phase}" + (
            f" (revision {self.steps[c].revision})" if self.steps[c].revision != self.current
            else "") for c in self.clusters
            if not (self.steps[c].revision == self.current and self.steps[c].phase == DONE)]
        not_ready = [c for c in self.clusters if not self.seen.get(c, Seen(False)).ready
                     and self.steps[c].phase == DONE]
        if not behind and not not_ready:
            return Condition("RolledOut", "True", "AllClustersUpdated",
                             f"every cluster runs revision {self.current} and is Ready")
        if self.blocked:
            return Condition("RolledOut", "False", "Waiting", self.blocked)
        if self.starved:
            return Condition("RolledOut", "False", INCONCLUSIVE,
                             f"rolling out revision {self.current}, waiting for metric data: "
                             + "; ".join(self.starved))
        if behind and self.spec.paused:
            return Condition("RolledOut", "False", PAUSED,
                             f"rollout of revision {self.current} paused: " + ", ".join(behind))
        if not behind:
            return Condition("RolledOut", "False", "NotReady",
                             f"revision {self.current} is not Ready on " + ", ".join(not_ready))
        return Condition("RolledOut", "False", "Progressing",
                         f"rolling out revision {self.current}: " + ", ".join(behind))


def begin(*, spec: RolloutSpec, state: State, clusters: list[str], current: int,
          unchanged: set[str], known: set[int], traffic: bool, now: dt.datetime) -> Rollout:
    """This reconcile's rollout of revision ``current`` over ``clusters`` (the current
    revision's targets); ``unchanged`` are the clusters whose running revision renders exactly
    as the current one: they have nothing to roll; ``known`` are the revisions that exist
    (``state`` already calls renumbered revisions by their new numbers)."""
    return Rollout(spec, state, clusters_in_order(spec, clusters), current, unchanged,
                   known | {current}, traffic, now)
