"""The hub is the source of truth, against real API servers: one bad manifest stays that
item's failure, drift on a spoke is put back (or reported), readiness follows kstatus, and
the seed's flow works with the namespace on the hub only."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually, mutating, requests, requests_delta
from hmls_devenv.simulator import MLSERVICE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import CONFIGMAPS, NAMESPACES, Resource
from tests.helpers import (
    FAST_PROBES,
    VS,
    condition,
    configmap,
    create,
    described_events,
    get_hmls,
    hmls,
    items,
    kubectl,
    load_sample,
    wait_condition,
    wait_weights,
)

Clients = dict[str, ClusterClient]
DEPLOYMENTS = Resource("apps/v1", "Deployment", "deployments", namespaced=True)


def sample_in(namespace: str, **spec: Any) -> Obj:
    """The seed's hmls-sample in another namespace (created on the hub only), spec amended."""
    obj = load_sample(namespace)
    obj["spec"].update(spec)
    return obj


def hub_namespace(env: Environment, namespace: str) -> None:
    kubectl(env, "hub", "create", "namespace", namespace, check=False)


def stable(obj: Obj | None) -> Any:
    """What must not move: conditions without their timestamps, items without spoke status."""
    status = (obj or {}).get("status") or {}
    return (
        [(c["type"], c["status"], c["reason"], c["message"]) for c in status.get("conditions", [])],
        [{k: v for k, v in i.items() if k != "status"} for i in status.get("aggregatedStatus", [])],
        status.get("traffic"),
    )


# ----- 4. the seed's flow: the namespace exists on the hub only ----------------------------
async def test_seed_flow_on_the_hub_only_creates_spoke_namespaces(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "truth-seed"
    hub_namespace(env, ns)
    for spoke in ("spoke1", "spoke2"):
        assert await clients[spoke].get(NAMESPACES, None, ns) is None
    create(env, sample_in(ns))
    obj = await wait_condition(clients["hub"], ns, "hmls-sample", "Ready")
    assert condition(obj, "FullyApplied")["status"] == "True"
    assert obj["status"]["summary"] == {"clusters": 2, "applied": "6/6", "ready": "2/2"}
    assert obj["status"]["createdNamespaces"] == [
        {"cluster": "spoke1", "name": ns}, {"cluster": "spoke2", "name": ns}]
    for spoke in ("spoke1", "spoke2"):
        created = await clients[spoke].get(NAMESPACES, None, ns)
        assert created is not None
        assert created["metadata"]["labels"]["app.kubernetes.io/created-by"] == "hmls-controller"
        assert created["metadata"]["annotations"]["hmls.tensorstack.dev/created-for"] == \
            f"{ns}/hmls-sample"
    reasons = {(e["reason"], e["message"]) for e in described_events(env, ns, "hmls-sample")}
    assert ("NamespaceCreated", f"created namespace {ns} on cluster spoke1") in reasons
    # deleting the HyperMLService deletes its objects, never the namespace
    kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s")
    for spoke in ("spoke1", "spoke2"):
        assert await clients[spoke].get(MLSERVICE, ns, "torch-mnist-s3") is None
        assert await clients[spoke].get(NAMESPACES, None, ns) is not None


async def test_a_namespace_hmls_did_not_create_is_left_unlabelled(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "truth-own-ns"
    hub_namespace(env, ns)
    kubectl(env, "spoke1", "create", "namespace", ns)
    create(env, hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("c", k="v")])))
    obj = await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    assert obj["status"]["createdNamespaces"] == [{"cluster": "spoke2", "name": ns}]
    theirs = await clients["spoke1"].get(NAMESPACES, None, ns)
    assert theirs is not None and "app.kubernetes.io/created-by" not in (
        theirs["metadata"].get("labels") or {})


# ----- 1. one bad manifest stays one item's failure --------------------------------------------
BAD_CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "numbers"},
                 "data": {"a": 1}}
WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
          "spec": {"size": 3}}


async def test_a_malformed_manifest_harms_no_other_item_cr_or_route(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    good_ns, bad_ns = "truth-good", "truth-bad"
    for ns in (good_ns, bad_ns):
        hub_namespace(env, ns)
    kubectl(env, "ingress", "create", "namespace", good_ns, check=False)
    sample = sample_in(good_ns, traffic={"ingressCluster": "ingress",
                                         "weights": {"spoke1": 30, "spoke2": 70}})
    create(env, sample)
    await wait_condition(clients["hub"], good_ns, "hmls-sample", "TrafficReady")
    await wait_weights(clients, good_ns, {"spoke1": 30, "spoke2": 70})
    before = await get_hmls(clients["hub"], good_ns, "hmls-sample")
    routes, _ = await clients["ingress"].list(VS, namespace=good_ns)
    route_version = routes[0]["metadata"]["resourceVersion"]

    create(env, hmls(bad_ns, "broken", (["spoke1"], [BAD_CONFIGMAP, WIDGET,
                                                      configmap("fine", k="v")])))
    broken = await wait_condition(clients["hub"], bad_ns, "broken", "FullyApplied", "False")
    by_name = {i["resource"]["name"]: i for i in items(broken)}
    assert by_name["numbers"]["applied"] is False
    assert by_name["numbers"]["appliedMessage"].startswith("rejected by cluster spoke1: ")
    assert ".data.a: expected string" in by_name["numbers"]["appliedMessage"]
    assert by_name["w"]["appliedMessage"] == (
        "kind Widget in apiVersion example.com/v1 is not served by cluster spoke1 "
        "(is its CRD installed?)")
    assert by_name["fine"]["applied"] is True
    assert await clients["spoke1"].get(CONFIGMAPS, bad_ns, "fine") is not None

    # for 30 s: spoke1 stays reachable, the sample's status and its HeadIngress do not move
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert controller.metrics()['hmls_cluster_reachable{cluster="spoke1"}'] == 1.0
        now = await get_hmls(clients["hub"], good_ns, "hmls-sample")
        assert stable(now) == stable(before)
        routes, _ = await clients["ingress"].list(VS, namespace=good_ns)
        assert routes[0]["metadata"]["resourceVersion"] == route_version
        await asyncio.sleep(2)
    kubectl(env, "hub", "delete", "hmls", "-n", bad_ns, "broken", "--timeout=30s")


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_scalar = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.none(), _text)
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=8)
_name = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), _text,
                  st.just("x" * 300), st.just("UPPER_case"))
_manifest = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(["v1", "apps/v1", "tensorstack.dev/v1beta1", "example.com/v1",
                                   "no-such-group/v9", "v1/v1"]),
    "kind": st.sampled_from(["ConfigMap", "Secret", "Deployment", "MLService", "Widget",
                             "Service", "Namespace", "lowercasekind"]),
    "metadata": st.fixed_dictionaries({"name": _name}, optional={
        "labels": st.dictionaries(_text, _value, max_size=2),
        "annotations": st.dictionaries(_text, _value, max_size=2)}),
}, optional={"data": st.one_of(_value, st.dictionaries(_text, _value, max_size=3)),
             "spec": _value, "stringData": _value,
             "huge": st.just("y" * 300_000)})


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(manifests=st.lists(_manifest, min_size=1, max_size=3))
async def test_fuzzed_manifests_never_touch_the_spoke_or_a_healthy_cr(
        env: Environment, clients: Clients, controller: Controller,
        manifests: list[Obj]) -> None:
    healthy_ns, fuzz_ns = "truth-fuzz-ok", "truth-fuzz"
    healthy = await get_hmls(clients["hub"], healthy_ns, "hmls-sample")
    if healthy is None:
        hub_namespace(env, healthy_ns)
        hub_namespace(env, fuzz_ns)
        create(env, sample_in(healthy_ns))
        healthy = await wait_condition(clients["hub"], healthy_ns, "hmls-sample", "Ready")
    cr = hmls(fuzz_ns, "fuzz", (["spoke1"], copy.deepcopy(manifests)))
    kubectl(env, "hub", "delete", "hmls", "-n", fuzz_ns, "fuzz", "--ignore-not-found",
            "--timeout=30s")  # the previous example's
    res = kubectl(env, "hub", "create", "-f", "-", input=json.dumps(cr), check=False)
    if res.returncode == 0:  # the hub's schema may refuse it first, which is fine too
        async def reconciled() -> Obj | None:
            o = await get_hmls(clients["hub"], fuzz_ns, "fuzz")
            return o if o and (o.get("status") or {}).get("observedGeneration") else None
        done = await eventually(reconciled, timeout=20, what="fuzz CR reconciled")
        for item in items(done):
            assert item["appliedMessage"], item  # every item says what happened to it
    assert controller.running(), "controller died"
    assert controller.metrics()['hmls_cluster_reachable{cluster="spoke1"}'] == 1.0
    assert stable(await get_hmls(clients["hub"], healthy_ns, "hmls-sample")) == stable(healthy)


# ----- 2. drift is put back, or reported ----------------------------------------------------------
async def mlservice_default(client: ClusterClient, ns: str) -> str | None:
    obj = await client.get(MLSERVICE, ns, "torch-mnist-s3")
    default = (obj or {}).get("spec", {}).get("default")
    return None if default is None else str(default)


async def test_drift_by_kubectl_patch_and_another_manager_is_reverted(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "truth-drift"
    hub_namespace(env, ns)
    create(env, sample_in(ns))
    await wait_condition(clients["hub"], ns, "hmls-sample", "Ready")
    counter = 'hmls_drift_corrected_total{cluster="spoke1"}'
    before = controller.metrics().get(counter, 0.0)

    latencies = []
    for _ in range(5):
        started = time.monotonic()
        kubectl(env, "spoke1", "patch", "mlservice", "-n", ns, "torch-mnist-s3",
                    "--type=merge", "-p", '{"spec":{"default":"hacked"}}')

        async def restored() -> bool:
            return await mlservice_default(clients["spoke1"], ns) == "origin"
        await eventually(restored, timeout=15, interval=0.05, what="spec.default put back")
        latencies.append(time.monotonic() - started)
    print(f"\ndrift restored after kubectl patch: {[round(x, 3) for x in latencies]} s")

    async def counted() -> bool:  # the spoke shows the restore before hmls's apply returns
        return controller.metrics().get(counter, 0.0) >= before + 5
    await eventually(counted, timeout=5, what=f"{counter} >= {before + 5}")

    # another field manager's forced server-side apply of a field hmls set
    theirs = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "s3-secret", "namespace": ns,
                           "labels": {"tensorstack.dev/resource": "stolen"}}}
    kubectl(env, "spoke1", "apply", "--server-side", "--force-conflicts",
            "--field-manager=intruder", "-f", "-", input=yaml.safe_dump(theirs))

    async def label_back() -> bool:
        s = await clients["spoke1"].get(Resource("v1", "Secret", "secrets", True), ns, "s3-secret")
        return bool(s and s["metadata"]["labels"]["tensorstack.dev/resource"] == "s3")
    await eventually(label_back, timeout=15, what="the Secret's label put back")
    events = described_events(env, ns, "hmls-sample")
    messages = [e["message"] for e in events if e["reason"] == "DriftCorrected"]
    assert any("kubectl-patch" in m and "spec.default" in m for m in messages), messages
    assert any("intruder" in m for m in messages), messages
    obj = await get_hmls(clients["hub"], ns, "hmls-sample")
    assert condition(obj, "FullyApplied")["status"] == "True"


async def test_fields_hmls_never_set_are_left_alone(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """An HPA-style spec.replicas left out of the manifest keeps whatever another manager
    sets, while a field hmls set in the same object is put back."""
    ns = "truth-hpa"
    hub_namespace(env, ns)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "web",
                                                                 "image": "nginx:1.27"}]}}}}
    create(env, hmls(ns, "svc", (["spoke1"], [deployment])))
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    kubectl(env, "spoke1", "scale", "deployment", "-n", ns, "web", "--replicas=5")
    kubectl(env, "spoke1", "set", "image", "deployment/web", "-n", ns, "web=nginx:hacked")

    async def image_back() -> Obj | None:
        d = await clients["spoke1"].get(DEPLOYMENTS, ns, "web")
        ok = d and d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
        return d if ok else None
    restored = await eventually(image_back, timeout=15, what="image put back")
    assert restored["spec"]["replicas"] == 5
    await asyncio.sleep(3)  # and it stays so
    d = await clients["spoke1"].get(DEPLOYMENTS, ns, "web")
    assert d is not None and d["spec"]["replicas"] == 5


async def test_report_policy_reports_drift_and_leaves_it(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "truth-report"
    hub_namespace(env, ns)
    create(env, sample_in(ns, driftPolicy="Report"))
    obj = await wait_condition(clients["hub"], ns, "hmls-sample", "Ready")
    assert condition(obj, "InSync")["status"] == "True"
    kubectl(env, "spoke2", "patch", "mlservice", "-n", ns, "torch-mnist-s3",
                "--type=merge", "-p", '{"spec":{"default":"hacked"}}')
    obj = await wait_condition(clients["hub"], ns, "hmls-sample", "InSync", "False")
    drifted = [i for i in items(obj) if i.get("drift")]
    assert [(i["cluster"], i["resource"]["kind"]) for i in drifted] == [("spoke2", "MLService")]
    assert "spec.default" in drifted[0]["drift"] and "kubectl-patch" in drifted[0]["drift"]
    assert condition(obj, "InSync")["reason"] == "DriftReported"
    await asyncio.sleep(2)
    assert await mlservice_default(clients["spoke2"], ns) == "hacked"


async def test_the_periodic_resync_costs_no_request(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """A second controller resyncing every second reconciles the settled CR again and again
    and writes nothing anywhere."""
    ns = "truth-resync"
    hub_namespace(env, ns)
    create(env, sample_in(ns))
    await wait_condition(clients["hub"], ns, "hmls-sample", "Ready")
    resyncing = Controller(env, *FAST_PROBES, "--resync-period", "1", "--watch-namespaces", ns)
    resyncing.start()
    try:
        await asyncio.sleep(2)  # its start-up reconcile is done
        spoke_res = {"mlservices", "mlserviceruntimes", "secrets", "namespaces"}
        before = await requests(env, ["spoke1", "spoke2", "hub"])
        runs_before = resyncing.metrics()['hmls_reconcile_total{result="success"}']
        await asyncio.sleep(4)
        assert resyncing.metrics()['hmls_reconcile_total{result="success"}'] >= runs_before + 2
        written = requests_delta(await requests(env, ["spoke1", "spoke2", "hub"]), before)
        assert {c: mutating(written[c], resources=spoke_res) for c in ("spoke1", "spoke2")} == \
            {"spoke1": 0, "spoke2": 0}
        assert mutating(written["hub"], resources={"hypermlservices"}) == 0
    finally:
        resyncing.stop()


# ----- 3. readiness follows kstatus --------------------------------------------------------------
async def test_a_deployment_is_ready_only_when_its_status_says_so(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "truth-ready"
    hub_namespace(env, ns)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                           "template": {"metadata": {"labels": {"app": "api"}},
                                        "spec": {"containers": [{"name": "api",
                                                                 "image": "nginx:1.27"}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
               "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}}
    create(env, hmls(ns, "svc", (["spoke1"], [deployment, service])))
    obj = await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    assert condition(obj, "Ready")["status"] == "False"
    dep_item = next(i for i in items(obj) if i["resource"]["kind"] == "Deployment")
    assert dep_item["ready"] is False and dep_item["readyMessage"]
    assert obj["status"]["summary"]["ready"] == "1/2"  # the Service (ClusterIP) is ready

    # what a controller-manager would report once both replicas are available
    live = await clients["spoke1"].get(DEPLOYMENTS, ns, "api")
    assert live is not None
    status = {"observedGeneration": live["metadata"]["generation"], "replicas": 2,
              "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
              "conditions": [
                  {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                  {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
    kubectl(env, "spoke1", "patch", "deployment", "-n", ns, "api", "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))
    obj = await wait_condition(clients["hub"], ns, "svc", "Ready")
    assert obj["status"]["summary"]["ready"] == "2/2"
    assert condition(obj, "Ready")["message"] == \
        "All 2 objects (1 Deployment, 1 Service) are Ready"
