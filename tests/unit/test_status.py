"""Unit tests for hmls.domain.status: conditions, aggregated items and summary."""

from __future__ import annotations

from typing import Any

from hmls.domain.conditions import Condition, Stamped, stamp
from hmls.domain.health import health
from hmls.domain.render import ResourceRef
from hmls.domain.status import (
    Behind,
    ItemResult,
    Pending,
    Status,
    Summary,
    aggregate,
    fit,
    fully_applied,
    invalid,
    progress,
    ready,
    summary,
)

T0 = "2024-01-01T00:00:00Z"
NOW = "2024-06-01T12:00:00Z"
OK = "Manifest has been successfully applied"

SECRET = ResourceRef("v1", "Secret", "demo", "s3-secret")
RUNTIME = ResourceRef("tensorstack.dev/v1beta1", "MLServiceRuntime", "demo", "rt")
SVC = ResourceRef("tensorstack.dev/v1beta1", "MLService", "demo", "svc")
NS = ResourceRef("v1", "Namespace", "", "demo")

READY_STATUS: dict[str, Any] = {"conditions": [{"type": "Paused", "status": "False"},
                                               {"type": "Ready", "status": "True"}]}
PAUSED_STATUS: dict[str, Any] = {"conditions": [{"type": "Paused", "status": "True"},
                                                {"type": "Ready", "status": "True"}]}


def ok(cluster: str, ref: ResourceRef, status: dict[str, Any] | None = None) -> ItemResult:
    seen = health({"apiVersion": ref.api_version, "kind": ref.kind, "status": status})
    return ItemResult(cluster, ref, True, OK, status, seen)


def failed(cluster: str, ref: ResourceRef, message: str = "boom") -> ItemResult:
    return ItemResult(cluster, ref, False, message)


def conditions_by_type(status: Status) -> dict[str, dict[str, Any]]:
    return {c.type: c.to_wire() for c in status.conditions}


def wire(item: ItemResult) -> dict[str, Any]:
    return item.to_item().to_wire()


def stored(*conditions: dict[str, Any]) -> list[Stamped]:
    return [Stamped.from_wire(c) for c in conditions]


# ----- FullyApplied ----------------------------------------------------------------------


def test_fully_applied_true() -> None:
    cond = fully_applied([ok("s1", SECRET), ok("s2", SVC, READY_STATUS)])
    assert cond == Condition("FullyApplied", "True", "AllApplied",
                             "All manifests have been successfully applied")


def test_fully_applied_waits_for_the_clusters_a_rollout_has_not_reached() -> None:
    """Found by the soak (seed 4066301207): mid-rollout every rendered item was applied, yet
    the generation was not on the clusters still at the old revision (or at none)."""
    items = [ok("s1", SVC, READY_STATUS)]
    assert fully_applied(items, Behind(2, ["s2"])) == Condition(
        "FullyApplied", "False", "RolloutInProgress",
        "revision 2 is not on s2 yet (progressive rollout)")
    assert fully_applied(items, Behind(2, ["s1", "s2"], halted=True)).reason == "RolloutHalted"
    assert fully_applied(items, Behind(2, [])).status == "True"
    assert fully_applied([failed("s1", SVC)], Behind(2, ["s2"])).reason == "ApplyFailed"


def test_fully_applied_false_lists_failures_with_counts() -> None:
    items = [ok("s1", SECRET), failed("s1", SVC, "forbidden"), ok("s2", SECRET),
             failed("s2", NS, "cluster s2 is unreachable: timeout")]
    cond = fully_applied(items)
    assert (cond.type, cond.status, cond.reason) == ("FullyApplied", "False", "ApplyFailed")
    assert cond.message == ("2 of 4 manifests not applied: "
                            "s1: MLService demo/svc: forbidden; "
                            "s2: Namespace demo: cluster s2 is unreachable: timeout")


def test_fully_applied_lists_three_without_truncation() -> None:
    items = [failed(f"c{i}", SECRET, f"e{i}") for i in range(3)]
    assert fully_applied(items).message == (
        "3 of 3 manifests not applied: c0: Secret demo/s3-secret: e0; "
        "c1: Secret demo/s3-secret: e1; c2: Secret demo/s3-secret: e2")


def test_fully_applied_truncates_after_three() -> None:
    items = [ok("c", NS)] + [failed(f"c{i}", SECRET, f"e{i}") for i in range(7)]
    msg = fully_applied(items).message
    assert msg.startswith("7 of 8 manifests not applied: c0: Secret demo/s3-secret: e0; ")
    assert msg.endswith("c2: Secret demo/s3-secret: e2; and 4 more")
    assert "e3" not in msg


def test_fully_applied_with_no_items_is_true() -> None:
    assert fully_applied([]).status == "True"


# ----- Ready -----------------------------------------------------------------------------


def test_ready_without_readiness_rules_and_all_applied() -> None:
    assert ready([ok("s1", SECRET), ok("s1", RUNTIME)]) == Condition(
        "Ready", "True", "NoReadinessRule",
        "No object in the workloads has a readiness rule; ready once applied")


def test_ready_without_readiness_rules_not_all_applied() -> None:
    assert ready([ok("s1", SECRET), failed("s1", RUNTIME)]) == Condition(
        "Ready", "False", "NotApplied",
        "1 of 2 objects not applied (no object in the workloads has a readiness rule: Ready "
        "once all are applied)")


def test_ready_counts_every_kind_with_a_rule() -> None:
    deploy = ResourceRef("apps/v1", "Deployment", "demo", "web")
    items = [ok("s1", SVC, READY_STATUS), ok("s2", deploy, {"replicas": 1})]
    cond = ready(items)
    assert cond.status == "False"
    assert cond.message.startswith("1 of 2 objects (1 Deployment, 1 MLService) not ready: "
                                   "s2: Deployment demo/web: ")


def test_ready_all_mlservices_ready() -> None:
    items = [ok("s1", SECRET), ok("s1", SVC, READY_STATUS), ok("s2", SVC, READY_STATUS)]
    assert ready(items) == Condition("Ready", "True", "AllReady", "All 2 MLServices are Ready")


def test_ready_false_lists_waiting_mlservices() -> None:
    items = [ok("s1", SVC, READY_STATUS), ok("s2", SVC, PAUSED_STATUS), ok("s3", SVC),
             failed("s4", SVC, "forbidden")]
    cond = ready(items)
    assert (cond.status, cond.reason) == ("False", "NotReady")
    assert cond.message == (
        "3 of 4 MLServices not ready: s2: MLService demo/svc: paused; "
        "s3: MLService demo/svc: no status reported yet; "
        "s4: MLService demo/svc: not applied")


def test_ready_truncates_waiting_list() -> None:
    items = [ok(f"s{i}", SVC) for i in range(5)]
    assert ready(items).message.endswith("; and 2 more")
    assert ready(items).message.startswith("5 of 5 MLServices not ready: ")


def test_not_applied_mlservice_with_stale_ready_status_is_not_ready() -> None:
    item = ItemResult("s1", SVC, False, "conflict", READY_STATUS)
    assert item.health is not None
    assert item.health.ready is False
    assert item.health.reason == "not applied"
    assert ready([item]).status == "False"


def test_failed_non_mlservice_does_not_affect_ready_when_mlservices_ready() -> None:
    items = [failed("s1", SECRET), ok("s1", SVC, READY_STATUS)]
    assert ready(items).status == "True"
    assert fully_applied(items).status == "False"


# ----- stamp ------------------------------------------------------------------------------


def test_merge_keeps_transition_time_when_status_unchanged() -> None:
    previous = stored({"type": "Ready", "status": "False", "reason": "NotReady",
                       "message": "old", "observedGeneration": 1, "lastTransitionTime": T0})
    new = [Condition("Ready", "False", "NotReady", "new message")]
    out = stamp(previous, new, generation=2, now=NOW)
    assert [c.to_wire() for c in out] == [{"type": "Ready", "status": "False",
                                           "reason": "NotReady", "message": "new message",
                                           "observedGeneration": 2, "lastTransitionTime": T0}]


def test_merge_moves_transition_time_when_status_changes() -> None:
    previous = stored({"type": "Ready", "status": "False", "lastTransitionTime": T0},
                      {"type": "FullyApplied", "status": "True", "lastTransitionTime": T0})
    new = [Condition("FullyApplied", "True", "AllApplied", "m"),
           Condition("Ready", "True", "AllReady", "m")]
    out = stamp(previous, new, generation=5, now=NOW)
    assert [(c.type, c.last_transition_time) for c in out] == [
        ("FullyApplied", T0), ("Ready", NOW)]
    assert {c.observed_generation for c in out} == {5}


def test_merge_new_condition_and_missing_previous_time_get_now() -> None:
    previous = Status.from_wire({"conditions": [{"type": "Ready", "status": "True"},
                                                "junk"]}).conditions
    new = [Condition("Ready", "True", "r", "m"), Condition("Custom", "Unknown", "r", "m")]
    out = stamp(previous, new, generation=1, now=NOW)
    assert [c.last_transition_time for c in out] == [NOW, NOW]


def test_merge_drops_conditions_no_longer_reported() -> None:
    previous = stored({"type": "Stale", "status": "True", "lastTransitionTime": T0})
    out = stamp(previous, [Condition("Ready", "True", "r", "m")], generation=1, now=NOW)
    assert [c.type for c in out] == ["Ready"]


# ----- items and summary -------------------------------------------------------------------


def test_item_status_shape_for_untracked_kind() -> None:
    assert wire(ok("s1", SECRET)) == {
        "cluster": "s1",
        "resource": {"apiVersion": "v1", "kind": "Secret", "name": "s3-secret",
                     "namespace": "demo"},
        "applied": True,
        "appliedMessage": OK,
    }


def test_item_status_shape_for_cluster_scoped_failure() -> None:
    assert wire(failed("s2", NS, "denied")) == {
        "cluster": "s2",
        "resource": {"apiVersion": "v1", "kind": "Namespace", "name": "demo"},
        "applied": False,
        "appliedMessage": "denied",
    }


def test_item_status_shape_for_mlservice() -> None:
    assert wire(ok("s1", SVC, READY_STATUS)) == {
        "cluster": "s1",
        "resource": {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
                     "name": "svc", "namespace": "demo"},
        "applied": True,
        "appliedMessage": OK,
        "ready": True,
        "status": READY_STATUS,
    }


def test_item_status_mlservice_without_status_has_ready_false_and_no_status() -> None:
    out = wire(ok("s1", SVC))
    assert out["ready"] is False
    assert "status" not in out


def test_summary_counts() -> None:
    items = [ok("s1", SECRET), ok("s1", RUNTIME), ok("s1", SVC, READY_STATUS),
             ok("s2", SECRET), failed("s2", RUNTIME), ok("s2", SVC, PAUSED_STATUS)]
    assert summary(items) == Summary(2, "5/6", "1/2")


def test_summary_empty_and_without_mlservices() -> None:
    assert summary([]) == Summary(0, "0/0", "0/0")
    assert summary([ok("a", SECRET), ok("b", SECRET), ok("c", NS)]) == Summary(3, "3/3", "0/0")


# ----- aggregate / invalid -----------------------------------------------------------------


def test_aggregate_complete_status() -> None:
    items = [ok("s1", SECRET), ok("s1", SVC, READY_STATUS)]
    previous = {"conditions": [
        {"type": "FullyApplied", "status": "True", "lastTransitionTime": T0},
        {"type": "Ready", "status": "False", "lastTransitionTime": T0},
    ]}
    extra = Condition("ClustersReachable", "True", "AllReachable", "ok")
    out = aggregate(generation=3, items=items, previous=Status.from_wire(previous), now=NOW,
                    extra=(extra,))
    raw = out.to_wire()
    assert raw["observedGeneration"] == 3
    assert raw["summary"] == {"clusters": 1, "applied": "2/2", "ready": "1/1"}
    assert raw["aggregatedStatus"] == [wire(i) for i in items]
    assert raw["conditions"] == [
        {"type": "FullyApplied", "status": "True", "reason": "AllApplied",
         "message": "All manifests have been successfully applied",
         "observedGeneration": 3, "lastTransitionTime": T0},
        {"type": "Ready", "status": "True", "reason": "AllReady",
         "message": "1 MLService is Ready", "observedGeneration": 3,
         "lastTransitionTime": NOW},
        {"type": "ClustersReachable", "status": "True", "reason": "AllReachable",
         "message": "ok", "observedGeneration": 3, "lastTransitionTime": NOW},
    ]


def test_aggregate_is_idempotent_for_unchanged_input() -> None:
    items = [ok("s1", SECRET), failed("s2", SVC)]
    first = aggregate(generation=1, items=items, previous=Status(), now=T0)
    second = aggregate(generation=1, items=items, previous=first, now=NOW)
    assert second == first


def test_invalid_keeps_previous_items_and_summary() -> None:
    prev = aggregate(generation=1, items=[ok("s1", SECRET)], previous=Status(), now=T0)
    out = invalid(generation=2, previous=prev, now=NOW,
                  message="spec.workloads: bad")
    assert out.observed_generation == 2
    assert out.summary == prev.summary
    assert out.items == prev.items
    conds = conditions_by_type(out)
    assert conds["FullyApplied"] == {
        "type": "FullyApplied", "status": "False", "reason": "InvalidSpec",
        "message": "spec.workloads: bad", "observedGeneration": 2, "lastTransitionTime": NOW}
    assert conds["Ready"]["status"] == "Unknown"
    assert conds["Ready"]["reason"] == "InvalidSpec"


def test_invalid_without_previous_status() -> None:
    out = invalid(generation=1, previous=Status(), now=NOW, message="m")
    assert out.summary == Summary(0, "0/0", "0/0")
    assert out.items == ()
    assert [c.type for c in out.conditions] == ["FullyApplied", "Ready", "Stalled"]
    stalled = out.condition("Stalled")
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    assert stalled.message == "m (fix the HyperMLService's spec)"


def test_fit_summarises_a_status_that_is_too_large() -> None:
    big = Status.from_wire({"aggregatedStatus": [
        {"cluster": f"c{i}", "resource": {"kind": "MLService", "name": "m"}, "applied": True,
         "appliedMessage": "ok", "ready": True, "status": {"blob": "x" * 1000}}
        for i in range(50)], "conditions": []})
    assert fit(big, limit=10**6) is big
    small = fit(big, limit=20_000).to_wire()
    assert all("status" not in i for i in small["aggregatedStatus"])
    assert [i["cluster"] for i in small["aggregatedStatus"]] == [f"c{i}" for i in range(50)]
    assert small["summarised"].startswith("per-item status omitted: the full status would be")


def test_invalid_keeps_everything_hmls_made_and_the_other_conditions() -> None:
    """A spec that cannot be parsed must not make the controller forget its traffic objects,
    pending deletions or rollout state (the next valid spec would start the rollout over)."""
    raw = {"observedGeneration": 1, "aggregatedStatus": [wire(ok("s1", SECRET))],
           "pendingDeletions": [{"cluster": "s3", "resource": NS.to_status(), "message": "m"}],
           "traffic": {"ingressCluster": "in", "provider": "Istio", "pathPrefix": "/p/",
                       "routes": [], "objects": [SVC.to_status()]},
           "rollout": {"currentRevision": 2, "summary": "0/0 at revision 2", "clusters": []},
           "conditions": [{"type": "RolledOut", "status": "True", "reason": "r", "message": "m",
                           "observedGeneration": 1, "lastTransitionTime": T0},
                          {"type": "Reconciling", "status": "True", "reason": "Retrying",
                           "message": "m", "observedGeneration": 1, "lastTransitionTime": T0}]}
    out = invalid(generation=2, previous=Status.from_wire(raw), now=NOW, message="bad")
    wired = out.to_wire()
    for key in ("aggregatedStatus", "pendingDeletions", "traffic", "rollout"):
        assert wired[key] == raw[key]
    # nothing is tried until the spec changes: Stalled, no longer Reconciling
    assert [c.type for c in out.conditions] == ["FullyApplied", "Ready", "Stalled", "RolledOut"]


# ----- kstatus: Reconciling / Stalled -------------------------------------------------------------

NOT_READY_STATUS: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "False",
                                                    "message": "0/1 replicas"}]}
GAVE_UP_STATUS: dict[str, Any] = {"conditions": [{"type": "Stalled", "status": "True",
                                                  "reason": "BadRuntime"}]}


def kstatus(items: list[ItemResult], *conditions: Condition,
            pending: tuple[Pending, ...] = ()) -> dict[str, tuple[str, str]]:
    """type -> (reason, message) of the abnormal-true conditions."""
    return {c.type: (c.reason, c.message) for c in progress(items, conditions, pending)}


def test_current_has_neither_condition() -> None:
    assert kstatus([ok("s1", SECRET), ok("s1", SVC, READY_STATUS)],
                   Condition("RolledOut", "True", "AllClustersUpdated", "m")) == {}


def test_a_failure_no_retry_mends_stalls_with_what_to_do() -> None:
    refused = ItemResult("s1", SVC, False, "forbidden by cluster s1: no", failure="Forbidden")
    got = kstatus([ok("s1", SECRET), refused])
    assert set(got) == {"Stalled"}
    reason, message = got["Stalled"]
    assert reason == "Forbidden"
    assert message.startswith("1 of 2 manifests cannot be applied: s1: ")
    assert "forbidden by cluster s1: no" in message and "grant it" in message


def test_a_failure_a_retry_may_mend_is_reconciling() -> None:
    down = ItemResult("s2", SVC, False, "cluster s2 is unreachable", failure="Unreachable")
    other = ItemResult("s1", SVC, False, "failed by cluster s1 (HTTP 503)", failure="Failed")
    assert kstatus([other, down])["Reconciling"][0] == "ClusterUnreachable"
    assert kstatus([other])["Reconciling"][0] == "Retrying"
    assert "Stalled" not in kstatus([other, down])


def test_waiting_for_readiness_is_reconciling_and_a_failed_object_stalls() -> None:
    assert kstatus([ok("s1", SVC, NOT_READY_STATUS)]) == {
        "Reconciling": ("WaitingForReady", "1 objects not Ready yet: s1: MLService demo/svc: "
                        "0/1 replicas")}
    got = kstatus([ok("s1", SVC, GAVE_UP_STATUS), ok("s2", SVC, NOT_READY_STATUS)])
    assert got["Stalled"][0] == "ObjectFailed" and "BadRuntime" in got["Stalled"][1]
    assert got["Reconciling"][0] == "WaitingForReady"


def test_rollout_reasons() -> None:
    items = [ok("s1", SVC, READY_STATUS)]
    halted = Condition("RolledOut", "False", "Halted", "revision 2 halted: s1 not Ready")
    assert kstatus(items, halted) == {"Stalled": (
        "RolloutHalted", "revision 2 halted: s1 not Ready (push a fixed revision, or hmls "
        "rollout undo)")}
    moving = Condition("RolledOut", "False", "Progressing", "rolling out revision 2: s2 Soaking")
    assert kstatus(items, moving) == {"Reconciling": ("RolloutInProgress", moving.message)}
    paused = Condition("RolledOut", "False", "Paused", "rollout of revision 2 paused")
    assert kstatus(items, paused) == {}


def test_traffic_and_cleanup_reasons() -> None:
    items = [ok("s1", SECRET)]
    bad = Condition("TrafficReady", "False", "InvalidTraffic", "no route")
    assert kstatus(items, bad) == {"Stalled": ("InvalidTraffic", "no route")}
    failing = Condition("TrafficReady", "False", "IngressApplyFailed", "503")
    assert kstatus(items, failing) == {"Reconciling": ("IngressApplyFailed", "503")}
    waiting = Pending("s3", SECRET, "cluster s3 is unreachable")
    assert kstatus(items, pending=(waiting,))["Reconciling"][0] == "CleanupPending"


def test_aggregate_adds_the_kstatus_conditions_and_drops_them_once_current() -> None:
    stuck = ItemResult("s1", SVC, False, "kind Widget is not served", failure="UnknownKind")
    first = aggregate(generation=1, items=[stuck, ok("s2", SVC, NOT_READY_STATUS)],
                      previous=Status(), now=T0)
    # Stalled first: kstatus decides by whichever of the two comes first
    assert [c.type for c in first.conditions] == ["FullyApplied", "Ready", "Stalled",
                                                  "Reconciling"]
    later = aggregate(generation=2, items=[ok("s2", SVC, READY_STATUS)], previous=first,
                      now=NOW)
    assert [c.type for c in later.conditions] == ["FullyApplied", "Ready"]


# ----- reading a stored status ----------------------------------------------------------------


def test_the_view_reads_inventory_from_items_pending_deletions_and_traffic() -> None:
    raw = {
        "aggregatedStatus": [wire(ok("s1", SECRET)), wire(failed("s1", RUNTIME)),
                             {**wire(failed("s2", SVC)), "created": True}, "junk"],
        "pendingDeletions": [{"cluster": "s3", "resource": NS.to_status(), "message": "m"}],
        "traffic": {"ingressCluster": "in", "objects": [SVC.to_status()]},
        "conditions": [{"type": "FullyApplied", "status": "True"}, 7]}
    view = Status.from_wire(raw)
    assert view.inventory() == {"s1": {SECRET}, "s2": {SVC}, "s3": {NS}, "in": {SVC}}
    assert view.fully_applied and Status.clusters_of({"status": raw}) == {"s1", "s2", "s3", "in"}
    assert view.messages()[("s1", RUNTIME)] == "boom"


def test_the_view_tolerates_any_stored_shape() -> None:
    for raw in ({"status": "text"}, {"status": {"aggregatedStatus": {"a": 1}, "traffic": 3}}, None):
        view = Status.of(raw)
        assert view.inventory() == {} and view.items == () and not view.fully_applied
        assert Status.clusters_of(raw) == set()


def test_the_clusters_a_status_involves_include_pending_deletions_and_the_ingress() -> None:
    """Found by the chaos soak (full run, seed 3175148325): a CR moved off a partitioned
    spoke kept its objects there as pending deletions only; when the spoke came back it was
    not re-enqueued (the status items named no longer that cluster) and the objects
    outlived their place by 36-44 s, until the CR's backoff ran out."""
    assert Status.clusters_of({"status": {
        "aggregatedStatus": [{"cluster": "spoke1", "resource": {"kind": "ConfigMap"}}],
        "pendingDeletions": [{"cluster": "spoke4", "resource": {"kind": "ConfigMap"},
                              "message": "cluster spoke4 is unreachable"}],
        "traffic": {"ingressCluster": "ingress", "routes": []}}}) == {"spoke1", "spoke4",
                                                                      "ingress"}
