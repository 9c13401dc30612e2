"""HeadIngress automation against real API servers: the ingress cluster carries the real
Istio and Gateway API CRDs (from the istio.io/api and sigs.k8s.io/gateway-api modules), so
every generated object passes their schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.simulator import READY_KNOB

from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import Resource
from tests.helpers import (
    VS,
    condition,
    create,
    get_hmls,
    hmls,
    kubectl,
    mlservice,
    namespace_everywhere,
    replace_spec,
    route_weights,
    wait_condition,
    wait_weights,
)

Clients = dict[str, ClusterClient]
SE = Resource("networking.istio.io/v1beta1", "ServiceEntry", "serviceentries", namespaced=True)
HTTPROUTE = Resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", namespaced=True)


async def routes_reported(clients: Clients, ns: str,
                          check: Callable[[list[dict[str, Any]]], bool], what: str) -> Obj:
    """The sample once its ``status.traffic.routes`` (both clusters') pass check."""
    async def reported() -> Obj | None:
        o = await get_hmls(clients["hub"], ns, "hmls-sample")
        routes = ((o or {}).get("status") or {}).get("traffic", {}).get("routes") or []
        return o if len(routes) > 1 and check(routes) else None
    found: Obj = await eventually(reported, what=what)
    return found


def recovering(route: dict[str, Any]) -> bool:
    return str(route.get("reason", "")).startswith("recovering")


def seed(ns: str, **traffic: Any) -> Obj:
    obj = hmls(ns, "hmls-sample", (["spoke1", "spoke2"], [mlservice("torch-mnist-s3")]))
    obj["spec"]["traffic"] = {"ingressCluster": "ingress", "weights": {"spoke1": 30, "spoke2": 70},
                              **traffic}
    return obj


async def test_seed_example_generates_the_seed_head_ingress(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "tr-seed"
    namespace_everywhere(env, ns)
    create(env, seed(ns))

    async def routed() -> Obj | None:
        o = await get_hmls(clients["hub"], ns, "hmls-sample")
        return o if condition(o, "TrafficReady").get("reason") == "Routed" else None
    obj = await eventually(routed, what="TrafficReady reason Routed")
    assert condition(obj, "TrafficReady")["message"] == "routing spoke1 30%, spoke2 70%"
    entries, _ = await clients["ingress"].list(SE, namespace=ns)
    hosts = sorted(e["spec"]["hosts"][0] for e in entries)
    assert hosts == [f"torch-mnist-s3-predict-origin.{ns}.ksvc.{s}.t9kcloud.cn"
                     for s in ("spoke1", "spoke2")]
    for e in entries:
        assert e["spec"]["location"] == "MESH_EXTERNAL"
        assert e["spec"]["resolution"] == "DNS"
        assert e["spec"]["ports"] == [{"number": 80, "name": "http", "protocol": "HTTP"}]
    services, _ = await clients["ingress"].list(VS, namespace=ns)
    spec = services[0]["spec"]
    assert spec["gateways"] == ["t9k.t9k-system"] and spec["hosts"] == ["*"]
    http = spec["http"][0]
    assert http["match"] == [{"uri": {"prefix": f"/t9k/hypermlservices/namespaces/{ns}/hmls-sample/"}}]
    for route, (host, weight) in zip(http["route"], zip(hosts, (30, 70), strict=True), strict=True):
        assert route == {"destination": {"host": host},
                         "headers": {"request": {"set": {"Host": host}}}, "weight": weight}
    routes = obj["status"]["traffic"]["routes"]
    assert [(r["cluster"], r["weight"], r["effectiveWeight"]) for r in routes] == [
        ("spoke1", 30, 30), ("spoke2", 70, 70)]
    assert routes[0]["url"] == f"http://{hosts[0]}"


async def test_not_ready_spoke_loses_traffic_and_gets_it_back_after_damping(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "tr-ready"
    namespace_everywhere(env, ns)
    create(env, seed(ns, recoverySeconds=3))
    await wait_weights(clients, ns, {"spoke1": 30, "spoke2": 70})
    kubectl(env, "spoke2", "annotate", "mlservice", "-n", ns, "torch-mnist-s3", f"{READY_KNOB}=false")
    await wait_weights(clients, ns, {"spoke1": 100})

    # the status is written after the ingress objects
    obj = await routes_reported(clients, ns, lambda r: r[1]["effectiveWeight"] == 0,
                                "status.traffic with spoke2 at 0")
    route2 = obj["status"]["traffic"]["routes"][1]
    assert route2["reason"].startswith("MLService not ready")
    assert condition(obj, "TrafficReady")["reason"] == "Degraded"
    kubectl(env, "spoke2", "annotate", "mlservice", "-n", ns, "torch-mnist-s3", f"{READY_KNOB}-")
    await routes_reported(clients, ns, lambda r: recovering(r[1]), "spoke2 recovering (damped)")
    assert await route_weights(clients["ingress"], ns) == {"spoke1": 100}
    await wait_weights(clients, ns, {"spoke1": 30, "spoke2": 70})


async def test_tiers_move_all_traffic_down_a_tier_and_back(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "tr-tiers"
    namespace_everywhere(env, ns)
    create(env, seed(ns, recoverySeconds=2, tiers=[{"clusters": ["spoke1"]},
                                                   {"clusters": ["spoke2"]}]))
    await wait_weights(clients, ns, {"spoke1": 100})
    kubectl(env, "spoke1", "annotate", "mlservice", "-n", ns, "torch-mnist-s3",
            f"{READY_KNOB}=false")
    await wait_weights(clients, ns, {"spoke2": 100})  # all of it, down a tier

    down = await routes_reported(
        clients, ns, lambda r: [x["effectiveWeight"] for x in r] == [0, 100],
        "status.traffic with spoke2 serving")
    routes = down["status"]["traffic"]["routes"]
    assert [(r["cluster"], r["tier"]) for r in routes] == [("spoke1", 0), ("spoke2", 1)]
    assert routes[0]["reason"].startswith("MLService not ready")
    kubectl(env, "spoke1", "annotate", "mlservice", "-n", ns, "torch-mnist-s3", f"{READY_KNOB}-")
    await routes_reported(clients, ns, lambda r: recovering(r[0]), "spoke1 recovering (damped)")
    assert await route_weights(clients["ingress"], ns) == {"spoke2": 100}
    await wait_weights(clients, ns, {"spoke1": 100})  # and back, after recoverySeconds
    # the status is written after the ingress objects (TrafficReady was True all along)
    back = await routes_reported(
        clients, ns, lambda r: [x["effectiveWeight"] for x in r] == [100, 0],
        "status.traffic with spoke1 serving again")
    assert condition(back, "TrafficReady")["message"] == "routing spoke1 100%; standing by: spoke2"


async def test_all_unhealthy_keeps_routes_then_removal_deletes_them(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "tr-none"
    namespace_everywhere(env, ns)
    obj = seed(ns)
    create(env, obj)
    await wait_weights(clients, ns, {"spoke1": 30, "spoke2": 70})
    kubectl(env, "spoke1", "annotate", "mlservice", "-n", ns, "torch-mnist-s3", f"{READY_KNOB}=false")
    await wait_weights(clients, ns, {"spoke2": 100})
    kubectl(env, "spoke2", "annotate", "mlservice", "-n", ns, "torch-mnist-s3", f"{READY_KNOB}=false")
    done = await wait_condition(clients["hub"], ns, "hmls-sample", "TrafficReady", "False")
    cond = condition(done, "TrafficReady")
    assert cond["reason"] == "NoHealthyCluster"
    assert cond["message"].startswith("no cluster is healthy; keeping the last routes (spoke2 100%)")
    assert "spoke1 (MLService not ready" in cond["message"]
    assert "spoke2 (MLService not ready" in cond["message"]
    assert await route_weights(clients["ingress"], ns) == {"spoke2": 100}
    del obj["spec"]["traffic"]
    replace_spec(env, obj)

    async def gone() -> bool:
        se, _ = await clients["ingress"].list(SE, namespace=ns)
        vs, _ = await clients["ingress"].list(VS, namespace=ns)
        return not se and not vs
    await eventually(gone, what="ingress objects deleted")

    async def untracked() -> Obj | None:  # the status is written after the objects are gone
        o = await get_hmls(clients["hub"], ns, "hmls-sample")
        return o if o and "traffic" not in o["status"] else None
    final = await eventually(untracked, what="status without traffic")
    assert condition(final, "TrafficReady") == {}


async def test_unreachable_spoke_loses_traffic(env: Environment, clients: Clients,
                                               controller: Controller, ingress: str) -> None:
    ns = "tr-unreachable"
    namespace_everywhere(env, ns)
    create(env, seed(ns, recoverySeconds=1))
    await wait_weights(clients, ns, {"spoke1": 30, "spoke2": 70})
    env.stop_cluster("spoke2")
    try:
        await wait_weights(clients, ns, {"spoke1": 100})
        obj = await get_hmls(clients["hub"], ns, "hmls-sample")
        reason = obj["status"]["traffic"]["routes"][1]["reason"]  # type: ignore[index]
        assert reason == "cluster unreachable (status stale)"
    finally:
        env.start_cluster("spoke2")
    await wait_weights(clients, ns, {"spoke1": 30, "spoke2": 70}, timeout=40)


async def test_gateway_api_provider_creates_a_weighted_httproute(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "tr-gwapi"
    namespace_everywhere(env, ns)
    create(env, seed(ns, provider="GatewayAPI"))

    async def routed() -> bool:
        o = await get_hmls(clients["hub"], ns, "hmls-sample")
        return condition(o, "TrafficReady").get("reason") == "Routed"
    await eventually(routed, what="TrafficReady reason Routed")
    routes, _ = await clients["ingress"].list(HTTPROUTE, namespace=ns)
    assert len(routes) == 1
    rule = routes[0]["spec"]["rules"][0]
    assert [b["weight"] for b in rule["backendRefs"]] == [30, 70]
    assert rule["matches"][0]["path"] == {
        "type": "PathPrefix", "value": f"/t9k/hypermlservices/namespaces/{ns}/hmls-sample"}
    services = kubectl(env, "ingress", "get", "svc", "-n", ns, "-o", "yaml").stdout
    externals = sorted(s["spec"]["externalName"] for s in yaml.safe_load(services)["items"])
    assert externals == [f"torch-mnist-s3-predict-origin.{ns}.ksvc.{s}.t9kcloud.cn"
                         for s in ("spoke1", "spoke2")]


@pytest.mark.parametrize(("weights", "message"), [
    ({"spoke9": 10}, "traffic.weights names a cluster that is in no workload"),
    ({"spoke1": -5}, "should be greater than or equal to 0"),
])
def test_kubectl_rejects_bad_weights(env: Environment, weights: dict[str, int], message: str) -> None:
    kubectl(env, "hub", "create", "namespace", "tr-invalid", check=False)
    obj = seed("tr-invalid")
    obj["spec"]["traffic"]["weights"] = weights
    res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr
