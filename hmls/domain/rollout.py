"""Progressive rollout: the pure step planner.

A revision is a numbered version of ``spec.workloads`` (kept on the hub as a
ControllerRevision).  With ``spec.rollout.strategy: Progressive`` each cluster runs one
revision, and moves to a new one in a **step**: ``Draining`` (its HeadIngress weight goes to
0; skipped without ``spec.traffic``), ``Applying`` (the new revision is applied; the cluster
must be Ready within ``progressDeadlineSeconds``), ``Soaking`` (Ready for ``soakSeconds``,
still without traffic), then ``Done`` (traffic back).  At most ``maxConcurrency`` steps run at
once, in ``order``.  A step that misses its deadline is ``Failed``; more than ``maxFailures``
halt the rollout: no further cluster starts, and with ``autoRollback`` every cluster that got
the new revision takes a step back to the last revision that was Ready everywhere, ending
``RolledBack``.

``begin`` starts one reconcile's rollout (``Rollout.runs``: which revision each cluster is
rendered at); ``Rollout.finish`` takes what that reconcile observed and returns the next
state.  Everything a step needs is in the
state, which the reconciler keeps in ``status.rollout``: a restarted controller resumes where
the last one was, and applies nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hmls.domain.models import RolloutSpec, parse_timestamp, timestamp
from hmls.domain.status import Condition

PENDING, DRAINING, APPLYING, SOAKING = "Pending", "Draining", "Applying", "Soaking"
DONE, FAILED, ROLLED_BACK = "Done", "Failed", "RolledBack"
ACTIVE = frozenset({DRAINING, APPLYING, SOAKING})


@dataclass(frozen=True)
class Step:
    """One cluster's place in the rollout (an item of ``status.rollout.clusters``)."""

    cluster: str
    revision: int | None
    """The revision the cluster runs (None: nothing applied yet)."""
    phase: str
    since: dt.datetime
    target: int | None = None
    """While Draining: the revision the step will apply (it runs ``revision`` until then)."""
    started: dt.datetime | None = None
    """When the step began: its progress deadline counts from here."""

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cluster": self.cluster, "phase": self.phase,
                               "since": timestamp(self.since)}
        if self.revision is not None:
            out["revision"] = self.revision
        if self.target is not None:
            out["targetRevision"] = self.target
        if self.started is not None:
            out["stepStarted"] = timestamp(self.started)
        return out

    @classmethod
    def from_status(cls, raw: Mapping[str, Any], now: dt.datetime) -> Step:
        def number(key: str) -> int | None:
            value = raw.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        phase = raw.get("phase")
        return cls(str(raw.get("cluster", "")), number("revision"),
                   phase if isinstance(phase, str) and phase else PENDING,
                   _time(raw.get("since")) or now, number("targetRevision"),
                   _time(raw.get("stepStarted")))


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
    def from_status(cls, raw: Mapping[str, Any] | None, now: dt.datetime) -> State:
        raw = raw or {}
        steps = [Step.from_status(s, now) for s in raw.get("clusters") or []
                 if isinstance(s, dict)]

        def number(key: str) -> int | None:
            value = raw.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        halted = raw.get("halted")
        return cls(number("currentRevision"), number("lastGoodRevision"),
                   halted if isinstance(halted, str) and halted else None,
                   {s.cluster: s for s in steps if s.cluster})

    def to_status(self, order: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"currentRevision": self.current,
                               "summary": summary(self, order),
                               "clusters": [self.steps[c].to_status() for c in order
                                            if c in self.steps]}
        if self.last_good is not None:
            out["lastGoodRevision"] = self.last_good
        if self.halted:
            out["halted"] = self.halted
        return out

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
    """The HeadIngress gave it traffic (effective weight > 0) as last planned."""


@dataclass(frozen=True)
class Finished:
    cluster: str
    result: str
    """done, failed, rolled_back"""
    seconds: float


@dataclass(frozen=True)
class Plan:
    state: State
    drained: frozenset[str]
    condition: Condition
    requeue_after: float | None
    events: list[tuple[str, str, str]]
    """(type, reason, message)"""
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
                 unchanged: set[str], traffic: bool, now: dt.datetime) -> None:
        self.spec, self.clusters, self.current = spec, clusters, current
        self.traffic, self.now = traffic, now
        self.seen: Mapping[str, Seen] = {}
        self.events: list[tuple[str, str, str]] = []
        self.finished: list[Finished] = []
        self.waits: list[float] = []
        self.urgent = False
        self.blocked = ""
        first = state.current is None
        self.halted = state.halted if state.current == current else None
        self.last_good = state.last_good
        self.steps: dict[str, Step] = {}
        for c in clusters:
            st = state.steps.get(c) or Step(c, None, PENDING, now)
            if first:  # the first revision recorded goes everywhere at once (nothing to protect)
                st = Step(c, current, APPLYING, now, current, now)
            elif st.phase not in ACTIVE and st.revision != current:
                if c in unchanged:
                    st = Step(c, current, DONE, now)  # renders the same: nothing to roll
                elif self.halted is None and st.phase != PENDING:
                    st = Step(c, st.revision, PENDING, now)
            self.steps[c] = st

    # ----- one step ---------------------------------------------------------------------
    def _event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def _finish(self, st: Step, phase: str, result: str) -> Step:
        began = st.started or st.since
        self.finished.append(Finished(st.cluster, result, (self.now - began).total_seconds()))
        return Step(st.cluster, st.revision, phase, self.now)

    def _advance(self, st: Step, final: str) -> Step:
        seen = self.seen.get(st.cluster, Seen(False))
        if st.phase == DRAINING:
            if self.traffic and seen.serving:
                self.urgent = True  # the HeadIngress is being applied without it
                return st
            self.urgent = True
            self._event("Normal", "RolloutStep", f"{st.cluster}: applying revision {st.target}")
            return Step(st.cluster, st.target, APPLYING, self.now, st.target, st.started)
        started = st.started or st.since
        deadline = started + dt.timedelta(seconds=self.spec.progress_deadline_seconds)
        if st.phase == APPLYING:
            if seen.ready:
                if self.spec.soak_seconds == 0:
                    return self._complete(st, final)
                self.waits.append(self.spec.soak_seconds)
                return Step(st.cluster, st.revision, SOAKING, self.now, st.target, started)
            if self.now >= deadline:
                self._event("Warning", "RolloutStepFailed",
                            f"{st.cluster}: revision {st.revision} not Ready within "
                            f"{self.spec.progress_deadline_seconds}s")
                return self._finish(st, FAILED, "failed")
            self.waits.append((deadline - self.now).total_seconds())
            return st
        if st.phase == SOAKING:
            if not seen.ready:
                self.waits.append(max(0.0, (deadline - self.now).total_seconds()))
                return Step(st.cluster, st.revision, APPLYING, self.now, st.target, started)
            left = self.spec.soak_seconds - (self.now - st.since).total_seconds()
            if left > 0:
                self.waits.append(left)
                return st
            return self._complete(st, final)
        return st

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
            return Step(st.cluster, st.revision, DRAINING, self.now, target, self.now)
        self._event("Normal", "RolloutStep", f"{st.cluster}: applying revision {target}")
        return Step(st.cluster, target, APPLYING, self.now, target, self.now)

    def _would_strand(self, cluster: str) -> bool:
        """Draining this cluster would leave no cluster serving (while it serves now).  A
        cluster that serves, or is Done and Ready (this reconcile's HeadIngress gives it its
        traffic back, in the same update that drains this one), counts."""
        if not self.traffic or not self.seen.get(cluster, Seen(False)).serving:
            return False

        def available(other: str) -> bool:
            seen, step = self.seen.get(other, Seen(False)), self.steps[other]
            return step.phase not in ACTIVE and (seen.serving or (seen.ready
                                                                  and step.phase == DONE))
        return not any(available(o) for o in self.clusters if o != cluster)

    def runs(self) -> dict[str, int | None]:
        """The revision each cluster is rendered at in this reconcile: the one it runs (a
        Draining cluster still runs its old one)."""
        return {c: s.revision for c, s in self.steps.items()}

    def finish(self, seen: Mapping[str, Seen]) -> Plan:
        self.seen = seen
        rolling_back = self.halted is not None
        for c in self.clusters:
            st = self.steps[c]
            if st.phase in ACTIVE:
                final = ROLLED_BACK if rolling_back and st.target == self.last_good else DONE
                self.steps[c] = self._advance(st, final)
        failures = [c for c in self.clusters if self.steps[c].phase == FAILED
                    and self.steps[c].revision == self.current]
        if self.halted is None and len(failures) > self.spec.max_failures:
            self._halt(failures)
        elif self.halted is None and not self.spec.paused:
            slots = self.spec.concurrency(len(self.clusters)) - sum(
                1 for c in self.clusters if self.steps[c].phase in ACTIVE)
            for c in self.clusters:
                st = self.steps[c]
                if slots <= 0:
                    break
                if st.phase != PENDING:
                    continue
                if self._would_strand(c):
                    self.blocked = (f"waiting: draining {c} would leave no healthy cluster "
                                    "serving traffic")
                    break
                self.steps[c] = self._start(st, self.current)
                slots -= 1
        if all(self.steps[c].revision == self.current and self.steps[c].phase == DONE
               for c in self.clusters) and self.clusters:
            if self.last_good != self.current:
                self._event("Normal", "RolledOut", f"revision {self.current} is Ready on every "
                            "cluster")
            self.last_good = self.current
        state = State(self.current, self.last_good, self.halted, self.steps)
        drained = frozenset(c for c in self.clusters if self.steps[c].phase in ACTIVE)
        requeue = 0.0 if self.urgent else (min(self.waits) if self.waits else None)
        return Plan(state, drained, self._condition(state), requeue, self.events, self.finished)

    def _halt(self, failures: list[str]) -> None:
        self.halted = (f"revision {self.current} halted: {', '.join(failures)} not Ready within "
                       f"{self.spec.progress_deadline_seconds}s")
        back = self.spec.auto_rollback and self.last_good is not None \
            and self.last_good != self.current
        self._event("Warning", "RolloutHalted", self.halted + (
            f"; rolling back to revision {self.last_good}" if back else ""))
        for c in self.clusters:
            st = self.steps[c]
            if st.phase == DRAINING:  # it never got the new revision
                self.steps[c] = Step(c, st.revision, PENDING, self.now)
            elif back and st.revision == self.current:
                assert self.last_good is not None
                self.steps[c] = self._start(st, self.last_good)

    def _condition(self, state: State) -> Condition:
        if self.halted:
            return Condition("RolledOut", "False", "Halted", self.halted + (
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
        if behind and self.spec.paused:
            return Condition("RolledOut", "False", "Paused",
                             f"rollout of revision {self.current} paused: " + ", ".join(behind))
        if not behind:
            return Condition("RolledOut", "False", "NotReady",
                             f"revision {self.current} is not Ready on " + ", ".join(not_ready))
        return Condition("RolledOut", "False", "Progressing",
                         f"rolling out revision {self.current}: " + ", ".join(behind))


def begin(*, spec: RolloutSpec, state: State, clusters: list[str], current: int,
          unchanged: set[str], traffic: bool, now: dt.datetime) -> Rollout:
    """This reconcile's rollout of revision ``current`` over ``clusters`` (the current
    revision's targets); ``unchanged`` are the clusters whose running revision renders exactly
    as the current one: they have nothing to roll."""
    return Rollout(spec, state, clusters_in_order(spec, clusters), current, unchanged, traffic,
                   now)
