"""The rollout state machine (hmls.domain.rollout) driven by random sequences of what happens
to a Progressive HyperMLService, its invariants checked after every reconcile.

A model of the controller around the planner: revisions recorded as ``Revisions.record`` does
(an edit back to older workloads renumbers that revision), clusters whose health and whose
revisions' quality decide readiness, a serving HyperMLService made Progressive, a clock,
pause, placement changes, traffic on and off, the HeadIngress reduced to its rule (a cluster
serves when it is healthy and not drained; with none such the last routes are kept), and
metric analysis (a revision's content whose metrics break their range, a Prometheus that does
not answer).  Every reconcile reads the
state from the stored status and stores the new one through the controller's own status
write (``hmls.domain.status.write``), so a field that survives a write is found here too.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from hmls.domain import analysis
from hmls.domain.models import RolloutSpec
from hmls.domain.patch import merge_patch
from hmls.domain.rollout import ACTIVE, APPLYING, DONE, SOAKING, Seen, State, begin
from hmls.domain.status import RolloutStatus, Status, status_patch

T0 = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)
UNIVERSE = ["c1", "c2", "c3"]
SOAK, DEADLINE = 10, 60
ANALYSIS = {"intervalSeconds": 5, "metrics": [
    {"name": "errors", "query": 'e{c="${cluster.name}"}', "thresholdRange": {"max": 0.01}},
    {"name": "latency", "query": "l", "thresholdRange": {"max": 0.5}, "failureLimit": 1,
     "inconclusiveLimit": 2}]}


class Controller(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.known: dict[int, int] = {}
        """Revision number -> content (the ControllerRevisions on the hub)."""
        self.aliases: dict[int, int] = {}
        """A renumbered revision's old number -> its new one."""
        self.bad: set[int] = set()
        """Contents that never get Ready."""
        self.slo_bad: set[int] = set()
        """Contents that get Ready but whose metrics break their range."""
        self.prometheus_up = True
        self.current = 0
        self.placed = ["c1", "c2"]
        self.healthy = dict.fromkeys(UNIVERSE, True)
        self.running: dict[str, int | None] = dict.fromkeys(UNIVERSE)
        """The revision each cluster's objects were last rendered at."""
        self.serving: set[str] = set()
        self.stored: dict[str, Any] = {}
        self.fields: dict[str, Any] = {"strategy": "Progressive", "soakSeconds": SOAK,
                                       "progressDeadlineSeconds": DEADLINE}
        self.traffic = True
        self.good_everywhere: set[int] = set()
        """Revisions that every placed cluster ran and was Ready at, at some reconcile."""
        self.quiet = 0.0
        """Seconds every placed cluster has been healthy and on good content, with no change."""
        self.requeue: float | None = None
        """When the last reconcile asked to be run again."""

    # ----- the world -------------------------------------------------------------------
    def spec(self) -> RolloutSpec:
        return RolloutSpec.model_validate(self.fields)

    def content(self, revision: int | None) -> int | None:
        return None if revision is None else self.known.get(revision)

    def state(self) -> State:
        stored = Status.from_wire(self.stored).rollout
        return stored.state if stored else State()

    @rule(content=st.integers(0, 3), bad=st.booleans(), slo_bad=st.booleans())
    def new_revision(self, content: int, bad: bool, slo_bad: bool = False) -> None:
        """An edit of the workloads (to new ones, or back to earlier ones)."""
        for marked, flag in ((self.bad, bad), (self.slo_bad, slo_bad)):
            if flag:
                marked.add(content)
            else:
                marked.discard(content)
        self._record(content)

    @precondition(lambda self: self.current == 0)
    @rule(content=st.integers(0, 3))
    def adopt(self, content: int) -> None:
        """A serving HyperMLService made Progressive: its clusters already run, and the
        healthy ones serve, what becomes its first revision."""
        self._record(content)
        for c in self.placed:
            self.running[c] = self.current
        self.serving = {c for c in self.placed if self._ready(c, self.current)}

    @precondition(lambda self: self.current > 0)
    @rule()
    def halt_then_undo(self) -> None:
        """A revision that never gets Ready, left to halt (and roll back), then undone."""
        self.new_revision(content=(self.known[self.current] + 1) % 4, bad=True)
        for _ in range(12):  # until the halt's rollback is over (if it halts: a person may
            self.reconcile(DEADLINE + 1 if self.requeue is None else self.requeue)
            state = self.state()  # have paused it, or a cluster may be unhealthy)
            if state.halted and not any(s.phase in ACTIVE for s in state.steps.values()):
                break
        self.undo()

    @precondition(lambda self: self.current > 0)
    @rule()
    def undo(self) -> None:
        """``hmls rollout undo``: the workloads of the last good revision (else the previous)."""
        good = self.state().last_good
        older = [n for n in self.known if n != self.current]
        target = good if good in self.known and good != self.current else max(older, default=0)
        if target:
            self._record(self.known[target])

    def _record(self, content: int) -> None:
        latest = max(self.known, default=0)
        if self.known.get(latest) == content:
            return
        found = next((n for n, c in self.known.items() if c == content), None)
        number = latest + 1
        if found is not None:
            del self.known[found]
            self.aliases = {old: number if new == found else new
                            for old, new in self.aliases.items()} | {found: number}
            self.running = {c: number if r == found else r for c, r in self.running.items()}
            self.good_everywhere = {number if r == found else r for r in self.good_everywhere}
        self.known[number] = content
        self.current = number
        self.quiet = 0

    @rule(cluster=st.sampled_from(UNIVERSE), healthy=st.booleans())
    def health(self, cluster: str, healthy: bool) -> None:
        self.healthy[cluster] = healthy
        self.quiet = 0

    @rule(paused=st.booleans())
    def pause(self, paused: bool) -> None:
        self.fields["paused"] = paused

    @rule(cluster=st.sampled_from(UNIVERSE))
    def toggle_placement(self, cluster: str) -> None:
        if cluster in self.placed and len(self.placed) > 1:
            self.placed.remove(cluster)
        elif cluster not in self.placed:
            self.placed.append(cluster)
        self.quiet = 0

    @rule(on=st.booleans(), on_inconclusive=st.sampled_from(["Wait", "Fail"]))
    def analysis_section(self, on: bool, on_inconclusive: str) -> None:
        if on:
            self.fields["analysis"] = {**ANALYSIS, "onInconclusive": on_inconclusive}
        else:
            self.fields.pop("analysis", None)

    @rule(up=st.booleans())
    def prometheus(self, up: bool) -> None:
        self.prometheus_up = up

    @rule(on=st.booleans())
    def traffic_section(self, on: bool) -> None:
        self.traffic = on
        if not on:
            self.serving = set()  # the HeadIngress objects are deleted

    @rule(concurrency=st.integers(1, 2), auto_rollback=st.booleans(),
          max_failures=st.integers(0, 1))
    def rollout_fields(self, concurrency: int, auto_rollback: bool, max_failures: int) -> None:
        self.fields.update(maxConcurrency=concurrency, autoRollback=auto_rollback,
                           maxFailures=max_failures)

    @rule()
    def restart(self) -> None:
        """A new controller reads the state back from the stored status."""
        status = Status.from_wire(self.stored)
        assert Status.from_wire(status.to_wire()) == status

    @precondition(lambda self: self.current > 0)
    @rule(seconds=st.sampled_from([0, 1, 4, SOAK + 1, DEADLINE + 1]))
    def reconcile(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)
        if self._healthy_everywhere():
            self.quiet += seconds
        self._reconcile()

    def _healthy_everywhere(self) -> bool:
        return all(self.healthy[c] for c in self.placed) and self.content(
            self.current) not in self.bad

    def _ready(self, cluster: str, revision: int | None) -> bool:
        return self.healthy[cluster] and revision is not None and self.content(
            revision) is not None and self.content(revision) not in self.bad

    # ----- one reconcile, as the reconciler runs it ------------------------------------
    def _reconcile(self) -> None:
        spec = self.spec()
        before = self.state().renumbered(self.aliases)
        unchanged = {c for c, s in before.steps.items() if s.revision is not None and (
            s.revision not in self.known
            or self.known[s.revision] == self.known[self.current])}
        r = begin(spec=spec, state=before, clusters=list(self.placed), current=self.current,
                  unchanged=unchanged, known=set(self.known), traffic=self.traffic,
                  now=self.now)
        runs = r.runs()
        written = set()
        for c in self.placed:
            rendered = runs[c]
            assert rendered is None or rendered in self.known, (
                f"{c} is rendered at revision {rendered}, which no longer exists "
                f"(known {sorted(self.known)}): its objects would be pruned")
            allowed = {self.running[c], self.current, before.last_good}
            assert rendered in allowed or rendered is None, (
                f"{c} moved from revision {self.running[c]} to {rendered} "
                f"(current {self.current}, last good {before.last_good})")
            if self.content(rendered) != self.content(self.running[c]):
                written.add(c)
            if rendered is not None:
                self.running[c] = rendered
        for c in UNIVERSE:
            if c not in self.placed:
                self.running[c] = None  # pruned
        seen = {c: Seen(c not in written and self._ready(c, self.running[c]),
                        c in self.serving, c in written) for c in self.placed}
        active_before = {c for c, s in before.steps.items() if s.phase in ACTIVE}
        measured = {c: [self._measure(c, m) for m in metrics]
                    for c, (_, metrics) in r.due().items()}
        plan = r.finish(seen, measured)
        self.requeue = plan.requeue_after
        state = plan.state
        # invariants of one transition
        active = [c for c, s in state.steps.items() if s.phase in ACTIVE]
        if state.last_good is not None:  # before any revision was good, nothing is protected
            limit = spec.concurrency(len(self.placed))
            assert len(active) <= limit or set(active) <= active_before, (
                f"{len(active)} clusters in a step: {active}")
        if state.halted:
            assert state.halted.startswith(f"revision {state.current} halted"), state.halted
        if plan.requeue_after == 0:  # honoured even while the CR fails elsewhere: no hot loop
            assert state.steps != before.steps or state.halted != before.halted, (
                "asks to be run again at once without a step having moved")
        if before.current != self.current and before.halted:
            assert not state.halted or state.halted.startswith(f"revision {self.current} ")
        if spec.analysis is not None:
            for c, step in state.steps.items():  # Done at the current revision: it passed
                was = before.steps.get(c)  # (unless it ran the same content already)
                if step.phase == DONE and was is not None and was.phase in ACTIVE \
                        and step.revision == self.current and not state.halted \
                        and c not in unchanged:
                    tallies = {t.metric: t for t in step.analysis}
                    assert all(m.name in tallies and tallies[m.name].successes > 0
                               and tallies[m.name].failures <= m.failure_limit
                               for m in spec.analysis.metrics), (c, step)
                    assert self.content(step.revision) not in self.slo_bad, (c, step)
        # a step never drains, nor holds out, the last serving cluster (a failed analysis may:
        # its cluster answers with errors, and with no cluster left the last routes are kept)
        newly = {c for c in plan.drained if state.steps[c].phase in ACTIVE} - active_before
        held = {c for c in plan.drained if state.steps[c].phase in (APPLYING, SOAKING)}
        for c in (newly | held) & self.serving if self.traffic else ():
            assert any(o != c and o not in plan.drained and (o in self.serving or seen[o].ready)
                       for o in self.placed), f"draining {c} leaves no cluster serving"
        if state.halted and any(s.phase in ACTIVE and s.target == state.last_good
                                for s in state.steps.values()):  # rolling back
            assert state.last_good in self.good_everywhere, (
                f"rolling back to revision {state.last_good}, never Ready everywhere")
        if all(self.running[c] == self.current and seen[c].ready for c in self.placed):
            self.good_everywhere.add(self.current)
        # the HeadIngress: healthy and not drained clusters serve; none such keeps the routes
        eligible = {c for c in self.placed if self._ready(c, self.running[c])
                    and c not in plan.drained} if self.traffic else set()
        self.serving = eligible or (self.serving & set(self.placed))
        # the status as the controller writes it
        new = Status(observed_generation=self.current,
                     rollout=RolloutStatus(state, tuple(self.placed))).to_wire()
        patch = status_patch(self.stored, new)
        if patch is not None:  # the write is skipped when nothing changed
            self.stored = merge_patch(self.stored, patch)
        assert self.stored == new, "the stored status differs from the one computed"

    def _measure(self, cluster: str, metric: Any) -> analysis.Measurement:
        """What the operator's Prometheus answers for a cluster soaking its revision."""
        if not self.prometheus_up:
            return analysis.Measurement.of(metric, None, self.now, "no answer")
        bad = self.content(self.running[cluster]) in self.slo_bad
        return analysis.Measurement.of(metric, 1.0 if bad else 0.0, self.now)

    # ----- liveness ----------------------------------------------------------------------
    @precondition(lambda self: self.current > 0)
    @rule()
    def settle(self) -> None:
        """Every placed cluster healthy, the rollout resumed and not halted at the current
        revision: within a bounded number of reconciles every cluster runs it, and
        RolledOut is True."""
        for c in self.placed:
            self.healthy[c] = True
        self.fields["paused"] = False
        self.prometheus_up = True
        self.bad.discard(self.known[self.current])
        self.slo_bad.discard(self.known[self.current])
        if self.state().halted and self.state().current == self.current:
            return  # a halt of the current revision waits for a person: a new revision
        # the changes above are events: one reconcile now; after that nothing happens in the
        # world, so the controller goes on only when the planner asked to look again
        self.reconcile(0)
        start = self.now
        for _ in range(16 * len(self.placed) + 16):
            if self._rolled_out():
                break
            assert self.requeue is not None, (
                f"nothing would reconcile it again: {self.state()}")
            self.reconcile(self.requeue)
        state = self.state()
        assert self._rolled_out(), state
        assert state.last_good == self.current
        # each step takes its soak and a look after its apply; one under way may start over
        steps = -(-len(self.placed) // self.spec().concurrency(len(self.placed))) + 1
        took = (self.now - start).total_seconds()
        assert took <= steps * (SOAK + 3), f"{took:.0f}s to roll out {len(self.placed)} clusters"

    def _rolled_out(self) -> bool:
        state = self.state()
        return all(c in state.steps and state.steps[c].revision == self.current
                   and state.steps[c].phase == DONE for c in self.placed)

    @invariant()
    def halted_concerns_the_current_revision(self) -> None:
        state = self.state()
        if state.halted:
            assert state.halted.startswith(f"revision {state.current} halted"), state


# make test: derandomized and bounded; make fuzz-rollout: HMLS_FUZZ_EXAMPLES=500 (random)
FUZZ = int(os.environ.get("HMLS_FUZZ_EXAMPLES", "0"))
Controller.TestCase.settings = settings(max_examples=FUZZ or 40, stateful_step_count=50,
                                        derandomize=not FUZZ, deadline=None,
                                        suppress_health_check=list(HealthCheck))
TestRolloutMachine = Controller.TestCase
