"""The progressive rollout planner (hmls.domain.rollout): revisions, health and clocks in,
next steps out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmls.domain.models import RolloutSpec
from hmls.domain.notices import Notice
from hmls.domain.rollout import (
    ACTIVE,
    APPLYING,
    DONE,
    DRAINING,
    FAILED,
    PENDING,
    ROLLED_BACK,
    SOAKING,
    Plan,
    Seen,
    State,
    Step,
    begin,
)

T0 = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)
CLUSTERS = ["spoke1", "spoke2"]


def rollout(**fields: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"strategy": "Progressive", "soakSeconds": 10,
                                       "progressDeadlineSeconds": 60, **fields})


def tick(spec: RolloutSpec, state: State, current: int, at: float, *,
         ready: Collection[str] = (), serving: Collection[str] = (),
         traffic: bool = True, clusters: list[str] = CLUSTERS,
         unchanged: Collection[str] = ()) -> tuple[Plan, dict[str, int | None]]:
    """One reconcile at T0 + at seconds: (plan, revision each cluster was rendered at)."""
    r = begin(spec=spec, state=state, clusters=clusters, current=current,
              unchanged=set(unchanged), known={1, 2, 3}, traffic=traffic,
              now=T0 + dt.timedelta(seconds=at))
    runs = r.runs()
    return r.finish({c: Seen(c in ready, c in serving) for c in clusters}), runs


def phases(plan: Plan) -> dict[str, tuple[str, int | None]]:
    return {c: (s.phase, s.revision) for c, s in plan.state.steps.items()}


def rolled_out(spec: RolloutSpec, revision: int = 1) -> State:
    """Every cluster Done at revision."""
    plan, _ = tick(spec, State(), revision, 0, ready=set(CLUSTERS))
    plan, _ = tick(spec, plan.state, revision, 11, ready=set(CLUSTERS), serving=set(CLUSTERS))
    assert plan.state.last_good == revision
    return plan.state


def test_the_first_revision_goes_everywhere_then_soaks() -> None:
    spec = rollout()
    plan, runs = tick(spec, State(), 1, 0)
    assert runs == {"spoke1": 1, "spoke2": 1}
    assert phases(plan) == {"spoke1": (APPLYING, 1), "spoke2": (APPLYING, 1)}
    plan, _ = tick(spec, plan.state, 1, 2, ready=set(CLUSTERS))
    assert phases(plan) == {"spoke1": (SOAKING, 1), "spoke2": (SOAKING, 1)}
    assert plan.requeue_after == 10
    plan, _ = tick(spec, plan.state, 1, 12, ready=set(CLUSTERS))
    assert phases(plan) == {"spoke1": (DONE, 1), "spoke2": (DONE, 1)}
    assert plan.state.last_good == 1
    assert (plan.condition.status, plan.condition.reason) == ("True", "AllClustersUpdated")
    assert [f.result for f in plan.finished] == ["done", "done"]


def test_a_serving_service_made_progressive_keeps_serving_through_its_first_revision() -> None:
    """The first revision goes everywhere at once: with both clusters in a step there is no
    other cluster to take their traffic, so neither is held out (invariant 5; they were,
    and the HeadIngress kept its last routes with TrafficReady False)."""
    spec = rollout()
    both = set(CLUSTERS)
    plan, _ = tick(spec, State(), 1, 0, ready=both, serving=both)
    assert phases(plan) == {"spoke1": (SOAKING, 1), "spoke2": (SOAKING, 1)}
    assert plan.drained == frozenset()
    # a new CR serves nowhere yet: its clusters soak without traffic, as any step does
    plan, _ = tick(spec, State(), 1, 0, ready=both)
    assert plan.drained == both


def test_one_cluster_at_a_time_drained_updated_soaked_then_the_next() -> None:
    spec = rollout()
    state = rolled_out(spec)
    both = set(CLUSTERS)
    plan, runs = tick(spec, state, 2, 100, ready=both, serving=both)
    assert phases(plan) == {"spoke1": (DRAINING, 1), "spoke2": (PENDING, 1)}
    assert plan.drained == {"spoke1"} and plan.requeue_after == 0
    assert plan.state.steps["spoke1"].target == 2
    # the HeadIngress has drained spoke1: now it gets revision 2 (and spoke2 keeps 1)
    plan, _ = tick(spec, plan.state, 2, 101, ready=both, serving={"spoke2"})
    assert phases(plan) == {"spoke1": (APPLYING, 2), "spoke2": (PENDING, 1)}
    plan, runs = tick(spec, plan.state, 2, 102, ready={"spoke2"}, serving={"spoke2"})
    assert runs == {"spoke1": 2, "spoke2": 1}
    assert phases(plan)["spoke1"] == (APPLYING, 2)
    plan, _ = tick(spec, plan.state, 2, 104, ready=both, serving={"spoke2"})
    assert phases(plan)["spoke1"] == (SOAKING, 2) and plan.drained == {"spoke1"}
    assert plan.condition.reason == "Progressing"
    assert "spoke1 Soaking" in plan.condition.message
    plan, _ = tick(spec, plan.state, 2, 110, ready=both, serving={"spoke2"})
    assert phases(plan)["spoke1"] == (SOAKING, 2)  # 6 s of 10
    plan, _ = tick(spec, plan.state, 2, 114, ready=both, serving={"spoke2"})
    assert phases(plan) == {"spoke1": (DONE, 2), "spoke2": (DRAINING, 1)}
    assert plan.drained == {"spoke2"}
    assert plan.finished[0].cluster == "spoke1" and plan.finished[0].seconds == 13  # from 101


def test_a_missed_deadline_halts_and_rolls_back_where_the_revision_went() -> None:
    spec = rollout()
    state = rolled_out(spec)
    both = set(CLUSTERS)
    plan, _ = tick(spec, state, 2, 100, ready=both, serving=both)
    plan, _ = tick(spec, plan.state, 2, 101, ready=both, serving={"spoke2"})
    plan, _ = tick(spec, plan.state, 2, 150, ready={"spoke2"}, serving={"spoke2"})
    assert phases(plan)["spoke1"] == (APPLYING, 2)
    plan, _ = tick(spec, plan.state, 2, 161, ready={"spoke2"}, serving={"spoke2"})
    assert plan.state.halted == "revision 2 halted: spoke1 not Ready within 60s"
    assert phases(plan) == {"spoke1": (DRAINING, 2), "spoke2": (PENDING, 1)}
    assert plan.state.steps["spoke1"].target == 1
    assert [e.reason for e in plan.events] == ["RolloutStepFailed", "RolloutHalted",
                                               "RolloutStep"]
    assert plan.condition.reason == "Halted"
    plan, runs = tick(spec, plan.state, 2, 162, ready={"spoke2"}, serving={"spoke2"})
    assert phases(plan)["spoke1"] == (APPLYING, 1)
    plan, runs = tick(spec, plan.state, 2, 163, ready=both, serving={"spoke2"})
    assert runs == {"spoke1": 1, "spoke2": 1}
    plan, _ = tick(spec, plan.state, 2, 174, ready=both, serving={"spoke2"})
    assert phases(plan) == {"spoke1": (ROLLED_BACK, 1), "spoke2": (PENDING, 1)}
    assert plan.state.last_good == 1 and plan.drained == frozenset()
    assert plan.condition.message == ("revision 2 halted: spoke1 not Ready within 60s; "
                                      "clusters rolled back to revision 1")
    # a new revision clears the halt
    plan, _ = tick(spec, plan.state, 3, 200, ready=both, serving=both)
    assert plan.state.halted is None
    assert phases(plan) == {"spoke1": (DRAINING, 1), "spoke2": (PENDING, 1)}


def test_without_auto_rollback_the_failed_cluster_stays() -> None:
    spec = rollout(autoRollback=False)
    plan, _ = tick(spec, rolled_out(spec), 2, 100, traffic=False)
    assert phases(plan)["spoke1"] == (APPLYING, 2)
    plan, _ = tick(spec, plan.state, 2, 161, traffic=False, ready={"spoke2"})
    assert phases(plan) == {"spoke1": (FAILED, 2), "spoke2": (PENDING, 1)}
    assert plan.state.halted


def test_tolerated_failures_let_the_rollout_go_on() -> None:
    spec = rollout(maxFailures=1)
    plan, _ = tick(spec, rolled_out(spec), 2, 100, traffic=False)
    plan, _ = tick(spec, plan.state, 2, 161, traffic=False, ready={"spoke2"})
    assert phases(plan) == {"spoke1": (FAILED, 2), "spoke2": (APPLYING, 2)}
    assert plan.state.halted is None


def test_pause_starts_nothing_but_lets_a_step_finish() -> None:
    spec = rollout(paused=True)
    state = rolled_out(spec)
    plan, _ = tick(spec, state, 2, 100, traffic=False, ready=set(CLUSTERS))
    assert phases(plan) == {"spoke1": (PENDING, 1), "spoke2": (PENDING, 1)}
    assert plan.condition.reason == "Paused"
    going, _ = tick(rollout(), state, 2, 100, traffic=False)
    plan, _ = tick(spec, going.state, 2, 101, traffic=False, ready=set(CLUSTERS))
    plan, _ = tick(spec, plan.state, 2, 112, traffic=False, ready=set(CLUSTERS))
    assert phases(plan) == {"spoke1": (DONE, 2), "spoke2": (PENDING, 1)}


def test_a_step_waits_when_draining_would_leave_no_cluster_serving() -> None:
    spec = rollout()
    state = rolled_out(spec)
    # spoke2 has nothing to roll but is unhealthy: spoke1 alone serves
    plan, _ = tick(spec, state, 2, 100, serving={"spoke1"}, unchanged={"spoke2"})
    assert phases(plan) == {"spoke1": (PENDING, 1), "spoke2": (DONE, 2)}
    assert (plan.condition.reason, plan.condition.message) == (
        "Waiting", "waiting: draining spoke1 would leave no healthy cluster serving traffic")


def test_a_cluster_that_does_not_serve_goes_before_the_one_that_does() -> None:
    spec = rollout()
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready={"spoke2"}, serving={"spoke1"})
    assert phases(plan) == {"spoke1": (PENDING, 1), "spoke2": (DRAINING, 1)}
    assert plan.condition.reason == "Progressing"


def test_order_and_percentages_pick_the_clusters() -> None:
    four = ["a", "b", "c", "d"]
    spec = rollout(maxConcurrency="50%", order=["d"])
    plan, _ = tick(spec, State(), 1, 0, clusters=four, ready=set(four), traffic=False)
    plan, _ = tick(spec, plan.state, 1, 11, clusters=four, ready=set(four), traffic=False)
    plan, _ = tick(spec, plan.state, 2, 100, clusters=four, traffic=False)
    assert [c for c, s in plan.state.steps.items() if s.phase == APPLYING] == ["d", "a"]
    assert list(plan.state.steps) == ["d", "a", "b", "c"]
    assert rollout(maxConcurrency="10%").concurrency(4) == 1


def test_clusters_the_change_does_not_touch_are_done_at_once() -> None:
    spec = rollout()
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready=set(CLUSTERS), serving=set(CLUSTERS),
                   unchanged={"spoke2"})
    assert phases(plan) == {"spoke1": (DRAINING, 1), "spoke2": (DONE, 2)}


def test_state_round_trips_through_status() -> None:
    spec = rollout()
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready=set(CLUSTERS), serving=set(CLUSTERS))
    raw = plan.state.to_status(CLUSTERS)
    assert raw["summary"] == "0/2 at revision 2: spoke1 Draining"
    assert raw["clusters"][0] == {"cluster": "spoke1", "phase": DRAINING, "revision": 1,
                                  "targetRevision": 2, "since": "2026-12-02T12:01:40Z",
                                  "stepStarted": "2026-12-02T12:01:40Z"}
    assert State.from_status(raw) == plan.state


@pytest.mark.parametrize("value", [0, "0%", "150%", "x"])
def test_bad_concurrency_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="maxConcurrency"):
        rollout(maxConcurrency=value)


@given(st.lists(st.tuples(st.sets(st.sampled_from(["a", "b", "c"])),
                          st.sets(st.sampled_from(["a", "b", "c"])),
                          st.integers(0, 120)), min_size=1, max_size=12),
       st.booleans(), st.booleans())
def test_a_halted_rollout_never_starts_a_new_cluster(
        ticks: list[tuple[set[str], set[str], int]], traffic: bool, auto_rollback: bool) -> None:
    clusters = ["a", "b", "c"]
    spec = rollout(autoRollback=auto_rollback)
    plan, _ = tick(spec, State(), 1, 0, clusters=clusters, ready=set(clusters), traffic=traffic)
    plan, _ = tick(spec, plan.state, 1, 11, clusters=clusters, ready=set(clusters),
                   serving=set(clusters), traffic=traffic)
    plan, _ = tick(spec, plan.state, 2, 100, clusters=clusters, serving=set(clusters),
                   traffic=traffic)
    plan, _ = tick(spec, plan.state, 2, 101, clusters=clusters, serving={"b", "c"},
                   traffic=traffic)
    never_got = {c for c, s in plan.state.steps.items() if s.revision != 2}
    assert never_got == {"b", "c"}
    plan, _ = tick(spec, plan.state, 2, 200, clusters=clusters, serving={"b", "c"},
                   traffic=traffic)
    assert plan.state.halted
    at = 200
    for ready, serving, dt_ in ticks:
        at += dt_
        plan, runs = tick(spec, plan.state, 2, at, clusters=clusters, ready=ready,
                          serving=serving, traffic=traffic)
        assert plan.state.halted
        for c in never_got:
            step = plan.state.steps[c]
            assert runs[c] != 2 and step.revision != 2 and step.target != 2
            assert step.phase not in ACTIVE


def test_a_new_revision_supersedes_an_unfinished_step_at_once() -> None:
    """Issue 27, bug 2: a step waiting for revision 2 to get Ready takes revision 3 at once,
    its deadline counting from then; the clusters not started yet start on revision 3."""
    spec = rollout()
    both = set(CLUSTERS)
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready=both, serving=both)
    plan, _ = tick(spec, plan.state, 2, 101, ready=both, serving={"spoke2"})
    plan, _ = tick(spec, plan.state, 2, 150, ready={"spoke2"}, serving={"spoke2"})
    assert phases(plan) == {"spoke1": (APPLYING, 2), "spoke2": (PENDING, 1)}
    plan, runs = tick(spec, plan.state, 3, 155, ready={"spoke2"}, serving={"spoke2"})
    assert runs == {"spoke1": 3, "spoke2": 1}
    assert phases(plan) == {"spoke1": (APPLYING, 3), "spoke2": (PENDING, 1)}
    assert plan.state.steps["spoke1"].started == T0 + dt.timedelta(seconds=155)
    assert Notice("Normal", "RolloutStepSuperseded",
                  "spoke1: the step to revision 2 is superseded by revision 3") in plan.events
    assert [(f.cluster, f.result) for f in plan.finished] == [("spoke1", "superseded")]
    plan, _ = tick(spec, plan.state, 3, 200, ready=both, serving={"spoke2"})  # 45 s in
    assert phases(plan)["spoke1"] == (SOAKING, 3)
    plan, _ = tick(spec, plan.state, 3, 211, ready=both, serving={"spoke2"})
    assert phases(plan) == {"spoke1": (DONE, 3), "spoke2": (DRAINING, 1)}
    assert plan.state.steps["spoke2"].target == 3


def test_a_draining_step_drains_for_the_newest_revision() -> None:
    spec = rollout()
    both = set(CLUSTERS)
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready=both, serving=both)
    assert phases(plan)["spoke1"] == (DRAINING, 1)
    plan, runs = tick(spec, plan.state, 3, 101, ready=both, serving=both)
    assert runs["spoke1"] == 1 and plan.state.steps["spoke1"].target == 3
    plan, runs = tick(spec, plan.state, 3, 102, ready=both, serving={"spoke2"})
    assert phases(plan)["spoke1"] == (APPLYING, 3)


def test_a_halt_concerns_only_its_revision_and_the_next_one_goes_everywhere() -> None:
    """Issue 27, bug 1, in the planner: after revision 2 halted and rolled back, revision 3
    reaches every cluster."""
    spec = rollout(soakSeconds=0)
    both = set(CLUSTERS)
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready=both, serving=both, traffic=False)
    plan, _ = tick(spec, plan.state, 2, 161, ready={"spoke2"}, traffic=False)
    assert plan.state.halted and phases(plan)["spoke1"] == (APPLYING, 1)
    plan, _ = tick(spec, plan.state, 2, 162, ready=both, traffic=False)
    assert phases(plan) == {"spoke1": (ROLLED_BACK, 1), "spoke2": (PENDING, 1)}
    plan, _ = tick(spec, plan.state, 3, 170, ready=both, traffic=False)
    assert plan.state.halted is None
    assert phases(plan) == {"spoke1": (APPLYING, 3), "spoke2": (PENDING, 1)}
    plan, _ = tick(spec, plan.state, 3, 171, ready=both, traffic=False)
    assert phases(plan) == {"spoke1": (DONE, 3), "spoke2": (APPLYING, 3)}
    plan, _ = tick(spec, plan.state, 3, 172, ready=both, traffic=False)
    assert phases(plan) == {"spoke1": (DONE, 3), "spoke2": (DONE, 3)}
    assert plan.state.last_good == 3 and plan.condition.status == "True"


def test_a_renumbered_revision_is_followed_by_its_new_number() -> None:
    """Going back to revision 1's workloads makes it revision 3 (as Deployments do): the
    state's references to 1 follow, and a halt of the old number is over."""
    state = State(1, 1, "revision 1 halted: spoke1 not Ready within 60s", {
        "spoke1": Step("spoke1", 1, APPLYING, T0, 1, T0), "spoke2": Step("spoke2", 2, DONE, T0)})
    moved = state.renumbered({1: 3})
    assert (moved.current, moved.last_good, moved.halted) == (3, 3, None)
    assert moved.steps["spoke1"] == Step("spoke1", 3, APPLYING, T0, 3, T0)
    assert moved.steps["spoke2"] == state.steps["spoke2"]
    assert state.renumbered({}) is state


def test_a_lone_cluster_is_updated_in_place() -> None:
    spec = rollout()
    plan, _ = tick(spec, State(), 1, 0, clusters=["spoke1"], ready={"spoke1"})
    plan, _ = tick(spec, plan.state, 1, 11, clusters=["spoke1"], ready={"spoke1"},
                   serving={"spoke1"})
    plan, _ = tick(spec, plan.state, 2, 100, clusters=["spoke1"], ready={"spoke1"},
                   serving={"spoke1"})
    assert phases(plan) == {"spoke1": (APPLYING, 2)} and plan.drained == frozenset()


def test_a_step_whose_revision_renders_as_the_new_one_goes_on() -> None:
    spec = rollout(maxConcurrency=2)
    both = set(CLUSTERS)
    plan, _ = tick(spec, rolled_out(spec), 2, 100, ready=both, serving=both, traffic=False)
    plan, _ = tick(spec, plan.state, 2, 101, ready=both, traffic=False)
    assert phases(plan) == {"spoke1": (SOAKING, 2), "spoke2": (SOAKING, 2)}
    plan, _ = tick(spec, plan.state, 3, 105, ready={"spoke2"}, traffic=False,
                   unchanged={"spoke2"})
    assert phases(plan) == {"spoke1": (APPLYING, 3), "spoke2": (SOAKING, 3)}
    assert [e.message for e in plan.events if e.reason == "RolloutStepSuperseded"] == [
        "spoke1: the step to revision 2 is superseded by revision 3"]
    plan, _ = tick(spec, plan.state, 3, 112, ready=both, traffic=False)
    assert phases(plan)["spoke2"] == (DONE, 3)  # soaked from 101, as it was


def test_planned_history_numbers_as_record_would_without_writing() -> None:
    """``hmls diff``'s view of a Progressive CR's revisions (rollouts.planned)."""
    from hmls.engine.rollouts import Revision, fingerprint, planned

    def rev(n: int, w: list[str], history: tuple[int, ...] = ()) -> Revision:
        return Revision(n, f"r{n}", fingerprint(list(w)), list(w), history)
    known = {1: rev(1, ["a"], (0,)), 2: rev(2, ["b"])}
    same = planned(known, ["b"])  # the newest: nothing new
    assert (same.current, sorted(same.workloads), dict(same.aliases)) == (2, [1, 2], {0: 1})
    new = planned(known, ["c"])
    assert (new.current, new.workloads[3], dict(new.aliases)) == (3, ["c"], {0: 1})
    back = planned(known, ["a"])  # an older one comes back, renumbered with its history
    assert (back.current, sorted(back.workloads), dict(back.aliases)) == (3, [2, 3],
                                                                          {0: 3, 1: 3})
