"""HeadIngress planning: weight arithmetic, health, damping, the seed's object shapes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmls.domain.health import health
from hmls.domain.models import Owner, TrafficSpec, parse_spec
from hmls.domain.render import ResourceRef
from hmls.domain.status import APPLIED_OK, ItemResult, TrafficStatus
from hmls.domain.traffic import distribute, plan

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
        **ready: bool):  # type: ignore[no-untyped-def]
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
