"""HeadIngress planning: weight arithmetic, health, damping, the seed's object shapes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hmls.domain.health import health
from hmls.domain.models import Owner, TrafficSpec, parse_spec
from hmls.domain.render import ResourceRef
from hmls.domain.status import APPLIED_OK, ItemResult, TrafficStatus
from hmls.domain.traffic import Plan, distribute, plan

OWNER = Owner("demo", "hmls-sample", "uid-1")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ML = ResourceRef("tensorstack.dev/v1beta1", "MLService", "default", "torch-mnist-s3")


def ml_status(cluster: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "address": {"url": f"http://torch-mnist-s3.default.ksvc.{cluster}.t9kcloud.cn"},
        "conditions": [{"type": "Paused", "status": "False"},
                       {"type": "Ready", "status": "True" if ready else "False",
                        "message": "predictor down"}],
        "defaultRelease": "origin",
        "releases": [{"name": "origin", "ready": ready,
                      "url": f"http://torch-mnist-s3-predict-origin.default.ksvc.{cluster}.t9kcloud.cn"}],
    }


def items(**ready: bool) -> list[ItemResult]:
    return [ItemResult(c, ML, True, APPLIED_OK, ml_status(c, ready=r),
                       health({"apiVersion": ML.api_version, "kind": ML.kind,
                               "status": ml_status(c, ready=r)}))
            for c, r in ready.items()]


SEED = TrafficSpec.model_validate({"ingressCluster": "ingress",
                                   "weights": {"spoke1": 30, "spoke2": 70}})


def run(traffic: TrafficSpec = SEED, *, previous: TrafficStatus | None = None,
        now: dt.datetime = T0, reachable: dict[str, bool | None] | None = None,
        **ready: bool) -> Plan:
    return plan(owner=OWNER, traffic=traffic, items=items(**ready), reachable=reachable or {},
                previous=previous, now=now)


def weights(p: Any) -> dict[str, int]:
    return {r["cluster"]: r["effectiveWeight"] for r in p.status.to_wire()["routes"]}


# ----- arithmetic ------------------------------------------------------------------------

def test_seed_weights_stay_30_70() -> None:
    assert distribute({"spoke1": 30, "spoke2": 70}, {"spoke1", "spoke2"}) == {"spoke1": 30, "spoke2": 70}


def test_equal_thirds_round_to_100() -> None:
    assert distribute({"a": 1, "b": 1, "c": 1}, {"a", "b", "c"}) == {"a": 34, "b": 33, "c": 33}


def test_ineligible_get_zero_and_the_rest_renormalize() -> None:
    assert distribute({"a": 30, "b": 70}, {"a"}) == {"a": 100, "b": 0}
    assert distribute({"a": 10, "b": 20, "c": 70}, {"a", "b"}) == {"a": 33, "b": 67, "c": 0}


def test_nothing_eligible_is_all_zero() -> None:
    assert distribute({"a": 30, "b": 70}, set()) == {"a": 0, "b": 0}
    assert distribute({"a": 0, "b": 0}, {"a", "b"}) == {"a": 0, "b": 0}


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 1000), min_size=1),
       st.sets(st.sampled_from("abcdefgh")))
def test_distribute_properties(configured: dict[str, int], eligible: set[str]) -> None:
    out = distribute(configured, eligible)
    assert set(out) == set(configured)
    positive = {c: w for c, w in configured.items() if c in eligible and w > 0}
    if not positive:
        assert sum(out.values()) == 0
        return
    assert sum(out.values()) == 100
    total = sum(positive.values())
    for c, w in configured.items():
        if c not in positive:
            assert out[c] == 0
        else:  # within one unit of the exact share
            assert abs(out[c] - 100 * w / total) < 1


# ----- objects ---------------------------------------------------------------------------

def test_seed_example_produces_the_seed_objects() -> None:
    p = run(spoke1=True, spoke2=True)
    kinds = [d.ref.kind for d in p.objects]
    assert kinds == ["ServiceEntry", "ServiceEntry", "VirtualService"]
    host1 = "torch-mnist-s3-predict-origin.default.ksvc.spoke1.t9kcloud.cn"
    host2 = "torch-mnist-s3-predict-origin.default.ksvc.spoke2.t9kcloud.cn"
    se = p.objects[0].body
    assert se["apiVersion"] == "networking.istio.io/v1beta1"
    assert se["spec"] == {"hosts": [host1], "location": "MESH_EXTERNAL",
                          "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                          "resolution": "DNS"}
    vs = p.objects[2].body
    assert vs["spec"] == {
        "gateways": ["t9k.t9k-system"], "hosts": ["*"],
        "http": [{"match": [{"uri": {"prefix": "/t9k/hypermlservices/namespaces/demo/hmls-sample/"}}],
                  "route": [
                      {"destination": {"host": host1},
                       "headers": {"request": {"set": {"Host": host1}}}, "weight": 30},
                      {"destination": {"host": host2},
                       "headers": {"request": {"set": {"Host": host2}}}, "weight": 70}]}]}
    assert all(d.body["metadata"]["namespace"] == "demo" for d in p.objects)
    assert all(d.cluster == "ingress" for d in p.objects)
    assert p.condition.status == "True" and p.condition.reason == "Routed"
    assert p.condition.message == "routing spoke1 30%, spoke2 70%"


def test_names_are_deterministic_and_distinct_across_owners() -> None:
    a = run(spoke1=True, spoke2=True)
    b = run(spoke1=True, spoke2=True)
    assert [d.ref.name for d in a.objects] == [d.ref.name for d in b.objects]
    other = plan(owner=Owner("demo", "hmls-sample-spoke1", "uid-2"), traffic=SEED,
                 items=items(spoke1=True, spoke2=True), reachable={}, previous=None, now=T0)
    assert not {d.ref.name for d in a.objects} & {d.ref.name for d in other.objects}
    assert all(len(d.ref.name) <= 63 for d in a.objects)


def test_default_equal_weights_over_clusters_running_the_mlservice() -> None:
    p = run(TrafficSpec.model_validate({"ingressCluster": "ingress"}), spoke1=True, spoke2=True)
    assert weights(p) == {"spoke1": 50, "spoke2": 50}


def test_gateway_api_provider() -> None:
    spec = TrafficSpec.model_validate({"ingressCluster": "ingress", "provider": "GatewayAPI",
                                       "weights": {"spoke1": 30, "spoke2": 70}})
    p = run(spec, spoke1=True, spoke2=True)
    assert [d.ref.kind for d in p.objects] == ["Service", "Service", "HTTPRoute"]
    svc = p.objects[0].body["spec"]
    assert svc["type"] == "ExternalName"
    assert svc["externalName"] == "torch-mnist-s3-predict-origin.default.ksvc.spoke1.t9kcloud.cn"
    route = p.objects[2].body["spec"]
    assert route["parentRefs"] == [{"name": "t9k", "namespace": "t9k-system"}]
    refs = route["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [
        (p.objects[0].ref.name, 30), (p.objects[1].ref.name, 70)]
    assert refs[0]["filters"][0]["requestHeaderModifier"]["set"][0]["name"] == "Host"


# ----- health and damping ----------------------------------------------------------------

def test_not_ready_cluster_gets_zero_immediately() -> None:
    first = run(spoke1=True, spoke2=True)
    p = run(previous=first.status, now=T0 + dt.timedelta(seconds=5), spoke1=True, spoke2=False)
    assert weights(p) == {"spoke1": 100, "spoke2": 0}
    route2 = p.status.to_wire()["routes"][1]
    assert route2["reason"] == "MLService not ready: predictor down"
    assert p.condition.reason == "Degraded" and p.condition.status == "True"
    vs = p.objects[-1].body["spec"]["http"][0]["route"]
    assert [r["weight"] for r in vs] == [100]


def test_unreachable_cluster_gets_zero() -> None:
    p = run(reachable={"spoke2": False}, spoke1=True, spoke2=True)
    assert weights(p) == {"spoke1": 100, "spoke2": 0}
    assert p.status.to_wire()["routes"][1]["reason"] == "cluster unreachable (status stale)"


def test_recovery_is_damped() -> None:
    spec = TrafficSpec.model_validate({"ingressCluster": "ingress", "recoverySeconds": 30,
                                       "weights": {"spoke1": 30, "spoke2": 70}})
    up = run(spec, spoke1=True, spoke2=True)
    down = run(spec, previous=up.status, now=T0 + dt.timedelta(seconds=1), spoke1=True, spoke2=False)
    back = run(spec, previous=down.status, now=T0 + dt.timedelta(seconds=2), spoke1=True, spoke2=True)
    assert weights(back) == {"spoke1": 100, "spoke2": 0}
    assert back.requeue_after == pytest.approx(30)
    assert back.status.to_wire()["routes"][1]["reason"].startswith("recovering: healthy since")
    still = run(spec, previous=back.status, now=T0 + dt.timedelta(seconds=20), spoke1=True,
                spoke2=True)
    assert weights(still) == {"spoke1": 100, "spoke2": 0}
    assert still.requeue_after == pytest.approx(12)
    done = run(spec, previous=still.status, now=T0 + dt.timedelta(seconds=33), spoke1=True,
               spoke2=True)
    assert weights(done) == {"spoke1": 30, "spoke2": 70}
    assert done.requeue_after is None


def test_flap_restarts_the_recovery_clock() -> None:
    up = run(spoke1=True, spoke2=True)
    down = run(previous=up.status, now=T0 + dt.timedelta(seconds=1), spoke1=True, spoke2=False)
    back = run(previous=down.status, now=T0 + dt.timedelta(seconds=2), spoke1=True, spoke2=True)
    flap = run(previous=back.status, now=T0 + dt.timedelta(seconds=20), spoke1=True, spoke2=False)
    again = run(previous=flap.status, now=T0 + dt.timedelta(seconds=40), spoke1=True, spoke2=True)
    assert weights(again) == {"spoke1": 100, "spoke2": 0}


def test_all_unhealthy_keeps_last_routes() -> None:
    up = run(spoke1=True, spoke2=True)
    p = run(previous=up.status, spoke1=False, spoke2=False)
    assert weights(p) == {"spoke1": 30, "spoke2": 70}
    assert p.condition.status == "False" and p.condition.reason == "NoHealthyCluster"
    assert "keeping the last routes (spoke1 30%, spoke2 70%)" in p.condition.message
    assert [r["weight"] for r in p.objects[-1].body["spec"]["http"][0]["route"]] == [30, 70]


def test_a_recovering_cluster_beats_keeping_routes_to_an_unhealthy_one() -> None:
    """Found by the soak (seed 7): spoke2 lost its traffic, then spoke1 failed too (the last
    routes were kept: spoke1 100); spoke2 came back but waited out its recovery window while
    every request still went to the broken spoke1."""
    up = run(spoke1=True, spoke2=True)
    s2_down = run(previous=up.status, now=T0 + dt.timedelta(seconds=1), spoke1=True, spoke2=False)
    both_down = run(previous=s2_down.status, now=T0 + dt.timedelta(seconds=2), spoke1=False,
                    spoke2=False)
    assert weights(both_down) == {"spoke1": 100, "spoke2": 0}  # kept
    s2_back = run(previous=both_down.status, now=T0 + dt.timedelta(seconds=3), spoke1=False,
                  spoke2=True)
    assert weights(s2_back) == {"spoke1": 0, "spoke2": 100}
    assert s2_back.condition.status == "True"
    assert "damped" not in s2_back.status.to_wire()["routes"][1] and s2_back.condition.reason == "Degraded"
    s1_back = run(previous=s2_back.status, now=T0 + dt.timedelta(seconds=4), spoke1=True,
                  spoke2=True)
    assert weights(s1_back) == {"spoke1": 0, "spoke2": 100}  # spoke1 is recovering now


def test_nothing_healthy_and_no_history_creates_nothing() -> None:
    p = run(spoke1=False, spoke2=False)
    assert p.objects == []
    assert p.condition.status == "False"


def test_ambiguous_mlservice_is_an_error() -> None:
    other = ResourceRef("tensorstack.dev/v1beta1", "MLService", "default", "other")
    with pytest.raises(ValueError, match=r"traffic\.mlservice must be set"):
        plan(owner=OWNER, traffic=TrafficSpec.model_validate({"ingressCluster": "ingress"}),
             items=[*items(spoke1=True), ItemResult("spoke1", other, True, APPLIED_OK, {})],
             reachable={}, previous=None, now=T0)


def test_spec_rejects_weights_for_unknown_or_negative_clusters() -> None:
    base = {"workloads": [{"clusters": ["spoke1"], "manifests": [{"kind": "X"}]}]}
    with pytest.raises(ValueError, match="names clusters in no workload: spoke9"):
        parse_spec({**base, "traffic": {"ingressCluster": "i", "weights": {"spoke9": 1}}})
    with pytest.raises(ValueError, match="must not be negative: spoke1"):
        parse_spec({**base, "traffic": {"ingressCluster": "i", "weights": {"spoke1": -1}}})


def test_cluster_that_never_had_traffic_is_not_damped() -> None:
    first = run(spoke1=False, spoke2=False)  # first reconcile: no status yet
    p = run(previous=first.status, now=T0 + dt.timedelta(seconds=1), spoke1=True, spoke2=True)
    assert weights(p) == {"spoke1": 30, "spoke2": 70}
    late = run(previous=run(spoke1=True, spoke2=False).status,
               now=T0 + dt.timedelta(seconds=1), spoke1=True, spoke2=True)
    assert weights(late) == {"spoke1": 30, "spoke2": 70}


# ----- priority tiers --------------------------------------------------------------------
# Priority tiers of the HeadIngress (hmls.domain.traffic.plan with ``traffic.tiers``):
# examples, and a stateful property test of the tier rule under random health, drains and
# time, the plan fed its own previous status as the reconciler feeds it.
#
# Invariants checked after every plan:
# 1. Traffic is in one tier only: every cluster with weight > 0 is in the same tier.
# 2. It is the first tier with an eligible cluster (healthy, not drained, not recovering, with
#    a positive weight), and it gets all 100; with none eligible the last routes are kept.
# 3. A cluster that lost its traffic gets it back only after ``recoverySeconds`` of health.
# 4. Each route says its tier (``len(tiers)``: in no tier).

CLUSTERS = ["c1", "c2", "c3", "c4"]
RECOVERY = 10


def tiered(tiers: list[dict[str, Any]], **fields: Any) -> TrafficSpec:
    return TrafficSpec.model_validate({"ingressCluster": "ingress", "recoverySeconds": RECOVERY,
                                       "tiers": tiers, **fields})


def routed(p: Plan) -> dict[str, int]:
    return {r.cluster: r.effective_weight for r in p.status.routes if r.effective_weight}


def run_tiers(spec: TrafficSpec, ready: dict[str, bool], *, previous: TrafficStatus | None = None,
        seconds: float = 0, drained: dict[str, str] | None = None,
        labels: dict[str, dict[str, str]] | None = None) -> Plan:
    return plan(owner=OWNER, traffic=spec, items=items(**ready), reachable={}, previous=previous,
                now=T0 + dt.timedelta(seconds=seconds), drained=drained, labels=labels)


# ----- examples -----------------------------------------------------------------------------

def test_the_first_healthy_tier_takes_all_and_recovery_is_damped() -> None:
    spec = tiered([{"clusters": ["c1"]}, {"clusters": ["c2", "c3"]}],
                  weights={"c1": 1, "c2": 1, "c3": 3})
    up = run_tiers(spec, {"c1": True, "c2": True, "c3": True})
    assert routed(up) == {"c1": 100}
    assert [(r.cluster, r.tier, r.reason) for r in up.status.routes] == [
        ("c1", 0, None), ("c2", 1, "standby: tier 0 serves"), ("c3", 1, "standby: tier 0 serves")]
    assert up.condition.reason == "Routed"  # standing by is not degraded
    assert up.condition.message == "routing c1 100%; standing by: c2, c3"
    down = run_tiers(spec, {"c1": False, "c2": True, "c3": True}, previous=up.status, seconds=1)
    assert routed(down) == {"c2": 25, "c3": 75}  # weights split within the tier
    back = run_tiers(spec, {"c1": True, "c2": True, "c3": True}, previous=down.status, seconds=2)
    assert routed(back) == {"c2": 25, "c3": 75}  # c1 recovering: tier 1 keeps serving
    assert back.requeue_after == RECOVERY
    again = run_tiers(spec, {"c1": True, "c2": True, "c3": True}, previous=back.status,
                seconds=2 + RECOVERY)
    assert routed(again) == {"c1": 100}


def test_a_drain_counts_as_unhealthy_and_selectors_choose_tiers() -> None:
    spec = tiered([{"clusterSelector": {"matchLabels": {"region": "near"}}}])
    labels = {"c1": {"region": "near"}, "c2": {"region": "far"}}
    both = {"c1": True, "c2": True}
    up = run_tiers(spec, both, labels=labels)
    assert routed(up) == {"c1": 100}
    assert {r.cluster: r.tier for r in up.status.routes} == {"c1": 0, "c2": 1}  # c2 in none
    drained = run_tiers(spec, both, previous=up.status, seconds=1, labels=labels,
                  drained={"c1": "drained for the rollout of revision 2"})
    assert routed(drained) == {"c2": 100}


def test_without_tiers_nothing_changes() -> None:
    spec = TrafficSpec.model_validate({"ingressCluster": "ingress",
                                       "weights": {"c1": 30, "c2": 70}})
    got = run_tiers(spec, {"c1": True, "c2": True})
    assert routed(got) == {"c1": 30, "c2": 70}
    assert all(r.tier is None for r in got.status.routes)
    assert "tier" not in got.status.to_wire()["routes"][0]


def test_a_cluster_in_two_tiers_is_a_spec_error() -> None:
    try:
        parse_spec({"workloads": [{"clusters": ["c1"], "manifests": [{"kind": "x"}]}],
                    "traffic": {"ingressCluster": "i", "tiers": [{"clusters": ["c1"]},
                                                                 {"clusters": ["c1"]}]}})
    except ValueError as exc:
        assert "a cluster is named in more than one tier: c1" in str(exc)
    else:
        raise AssertionError("accepted")


# ----- the tier rule under random events ----------------------------------------------------

class Ingress(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self.ready = dict.fromkeys(CLUSTERS, True)
        self.drained: set[str] = set()
        self.tiers: list[list[str]] = [["c1"], ["c2", "c3"]]
        self.weights = dict.fromkeys(CLUSTERS, 1)
        self.previous: TrafficStatus | None = None
        self.healthy_since: dict[str, float | None] = dict.fromkeys(CLUSTERS, 0.0)
        self.lost: set[str] = set()
        """Clusters that went unhealthy with traffic: they must recover before getting it
        back (a cluster put on standby, or drained, has nothing to prove)."""
        self.last: Plan | None = None

    def spec(self) -> TrafficSpec:
        return tiered([{"clusters": t} for t in self.tiers if t], weights=self.weights)

    @rule(cluster=st.sampled_from(CLUSTERS), ready=st.booleans())
    def health(self, cluster: str, ready: bool) -> None:
        if ready and not self.ready[cluster]:
            self.healthy_since[cluster] = self.seconds
        elif not ready:
            self.healthy_since[cluster] = None
            route = {r.cluster: r for r in (self.previous.routes if self.previous else ())
                     }.get(cluster)
            if route is not None and (route.effective_weight > 0 or route.damped):
                self.lost.add(cluster)
        self.ready[cluster] = ready
        self.plan()

    @rule(cluster=st.sampled_from(CLUSTERS), drained=st.booleans())
    def drain(self, cluster: str, drained: bool) -> None:
        (self.drained.add if drained else self.drained.discard)(cluster)
        self.plan()

    @rule(cluster=st.sampled_from(CLUSTERS), weight=st.integers(0, 3))
    def weight(self, cluster: str, weight: int) -> None:
        self.weights[cluster] = weight
        self.plan()

    @rule(seconds=st.sampled_from([1, 4, RECOVERY, RECOVERY + 1]))
    def wait(self, seconds: int) -> None:
        self.seconds += seconds
        self.plan()

    def plan(self) -> None:
        spec = self.spec()
        before = {r.cluster: r.effective_weight for r in (self.previous.routes
                                                          if self.previous else ())}
        p = run_tiers(spec, self.ready, previous=self.previous, seconds=self.seconds,
                drained={c: "drained" for c in self.drained})
        now = routed(p)
        tiers = {r.cluster: r.tier for r in p.status.routes}
        assert all(t is not None for t in tiers.values()), tiers  # 4.
        serving_tiers = {tiers[c] for c in now}
        kept = p.condition.reason == "NoHealthyCluster"
        if not kept:
            assert len(serving_tiers) <= 1, now  # 1.
        # a cluster healthy while drained comes back when its rollout step (whose soak
        # judged it) ends, with no second recovery wait
        self.lost -= {c for c in self.drained if self.ready[c]}
        recovering = {c for c in self.lost if self.healthy_since[c] is None
                      or self.seconds - (self.healthy_since[c] or 0) < RECOVERY}
        eligible = [c for c in CLUSTERS if self.ready[c] and c not in self.drained
                    and c not in recovering and self.weights[c] > 0]
        if eligible and not kept:
            top = min(spec.tier_of(c, {}) for c in eligible)
            assert serving_tiers == {top}, (now, top)  # 2.
            assert sum(now.values()) == 100
        for c in now:  # 3. (unless no cluster is eligible: recovering beats unhealthy)
            if c in self.lost and not before.get(c):
                since = self.healthy_since[c]
                assert (since is not None and self.seconds - since >= RECOVERY) or not (
                    eligible), (c, since)
            if not kept:  # the last routes kept are no proof of recovery
                self.lost.discard(c)
        self.lost -= {c for c in self.lost if c not in recovering}  # recovered, serving or not
        self.previous, self.last = p.status, p

    @invariant()
    def routes_are_reported(self) -> None:
        if self.last is not None:
            assert {r.cluster for r in self.last.status.routes} == set(CLUSTERS)


Ingress.TestCase.settings = settings(max_examples=60, stateful_step_count=40, derandomize=True,
                                     deadline=None, suppress_health_check=list(HealthCheck))
TestIngressTiers = Ingress.TestCase
