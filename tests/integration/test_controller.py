"""The controller against real API servers: apply, update, prune, feedback, delete, and the
ways a cluster or a manifest can fail.  Each test works in its own namespace."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually, mutating, requests, requests_delta
from hmls_devenv.simulator import READY_KNOB

from hmls.domain.models import (
    CLUSTER_LABEL,
    FIELD_MANAGER,
    FINALIZER,
    HASH_ANNOTATION,
    ORPHAN_ANNOTATION,
    OWNER_NAME,
    OWNER_NAMESPACE,
    OWNER_UID,
)
from hmls.kube.client import ClusterClient
from hmls.kube.resources import CONFIGMAPS, SECRETS
from tests.helpers import (
    AS_IS,
    condition,
    configmap,
    create,
    get_hmls,
    hmls,
    hmls_cli,
    items,
    kubectl,
    load_sample,
    mlservice,
    namespace_everywhere,
    replace_spec,
    spoke_mlservice,
    wait_condition,
)

Clients = dict[str, ClusterClient]
SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "hmls-sample.yaml"


async def test_seed_sample_becomes_fully_applied_and_ready(
        env: Environment, clients: Clients, controller: Controller) -> None:
    namespace_everywhere(env, "demo")
    kubectl(env, "hub", "create", "-f", str(SAMPLE))
    obj = await wait_condition(clients["hub"], "demo", "hmls-sample", "Ready")
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert condition(obj, "FullyApplied")["message"] == "All manifests have been successfully applied"
    assert obj["status"]["summary"] == {"clusters": 2, "applied": "6/6", "ready": "2/2"}
    assert [(i["cluster"], i["resource"]["kind"]) for i in items(obj)] == [
        (c, k) for c in ("spoke1", "spoke2") for k in ("MLServiceRuntime", "Secret", "MLService")]
    for item in items(obj):
        assert item["applied"] is True
        assert item["appliedMessage"] == "Manifest has been successfully applied"
        assert item["resource"]["namespace"] == "demo"
    for spoke in ("spoke1", "spoke2"):
        ml = next(i for i in items(obj, spoke) if i["resource"]["kind"] == "MLService")
        assert ml["status"]["address"]["url"] == f"http://torch-mnist-s3.demo.ksvc.{spoke}.t9kcloud.cn"
        live = await spoke_mlservice(clients[spoke], "demo", "torch-mnist-s3")
        assert live is not None
        labels = live["metadata"]["labels"]
        assert labels[OWNER_NAMESPACE] == "demo"
        assert labels[OWNER_NAME] == "hmls-sample"
        assert labels[OWNER_UID] == obj["metadata"]["uid"]
        assert HASH_ANNOTATION in live["metadata"]["annotations"]
        assert {m["manager"] for m in live["metadata"]["managedFields"]} >= {FIELD_MANAGER}
        secret = await clients[spoke].get(SECRETS, "demo", "s3-secret")
        assert secret is not None
        assert base64.b64decode(secret["data"][".s3cfg"]).startswith(b"host_base")
    out = kubectl(env, "hub", "get", "hmls", "-n", "demo").stdout.splitlines()
    assert out[1].split()[1:5] == ["2", "6/6", "2/2", "True"]


async def test_edit_manifest_updates_spokes(env: Environment, clients: Clients,
                                            controller: Controller) -> None:
    ns = "t-edit"
    namespace_everywhere(env, ns)
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [mlservice("m"), configmap("cfg", a="1")]))
    create(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "Ready")
    obj["spec"]["workloads"][0]["manifests"][1]["data"] = {"a": "2"}
    obj["spec"]["workloads"][0]["manifests"][0]["spec"]["releases"][0]["predictor"]["minReplicas"] = 3
    replace_spec(env, obj)
    for spoke in ("spoke1", "spoke2"):
        async def updated(s: str = spoke) -> bool:
            cm = await clients[s].get(CONFIGMAPS, ns, "cfg")
            ml = await spoke_mlservice(clients[s], ns, "m")
            return bool(cm and cm["data"] == {"a": "2"} and ml
                        and ml.get("status", {}).get("releases", [{}])[0].get("totalReplicas") == 3)
        await eventually(updated, what=f"{spoke} updated")
    done = await wait_condition(clients["hub"], ns, "svc", "Ready")
    assert done["status"]["observedGeneration"] == 2


async def test_removing_a_manifest_prunes_only_it(env: Environment, clients: Clients,
                                                  controller: Controller) -> None:
    ns = "t-prune"
    namespace_everywhere(env, ns)
    kubectl(env, "spoke1", "create", "configmap", "bystander", "-n", ns)
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("keep"), configmap("drop")]))
    create(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    obj["spec"]["workloads"][0]["manifests"] = [configmap("keep")]
    replace_spec(env, obj)
    for spoke in ("spoke1", "spoke2"):
        async def gone(s: str = spoke) -> bool:
            return await clients[s].get(CONFIGMAPS, ns, "drop") is None
        await eventually(gone, what=f"drop pruned from {spoke}")
        assert await clients[spoke].get(CONFIGMAPS, ns, "keep") is not None
    assert await clients["spoke1"].get(CONFIGMAPS, ns, "bystander") is not None
    final = await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    assert [i["resource"]["name"] for i in items(final)] == ["keep", "keep"]
    assert "pendingDeletions" not in final["status"]


async def test_removing_a_cluster_prunes_there_only(env: Environment, clients: Clients,
                                                    controller: Controller) -> None:
    ns = "t-prune-cluster"
    namespace_everywhere(env, ns)
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [mlservice("m")]))
    create(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "Ready")
    before = await spoke_mlservice(clients["spoke1"], ns, "m")
    obj["spec"]["workloads"][0]["clusters"] = ["spoke1"]
    replace_spec(env, obj)

    async def gone() -> bool:
        return await spoke_mlservice(clients["spoke2"], ns, "m") is None
    await eventually(gone, what="MLService pruned from spoke2")
    after = await spoke_mlservice(clients["spoke1"], ns, "m")
    assert before and after
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    final = await wait_condition(clients["hub"], ns, "svc", "Ready")
    assert {i["cluster"] for i in items(final)} == {"spoke1"}


async def test_spoke_readiness_flows_back_to_the_hub(env: Environment, clients: Clients,
                                                     controller: Controller) -> None:
    ns = "t-ready"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "spoke2"], [mlservice("m")])))
    await wait_condition(clients["hub"], ns, "svc", "Ready")
    kubectl(env, "spoke2", "annotate", "mlservice", "-n", ns, "m", f"{READY_KNOB}=false")
    obj = await wait_condition(clients["hub"], ns, "svc", "Ready", "False")
    cond = condition(obj, "Ready")
    assert cond["reason"] == "NotReady"
    assert "spoke2: MLService t-ready/m" in cond["message"]
    assert [i["ready"] for i in items(obj)] == [True, False]
    assert condition(obj, "FullyApplied")["status"] == "True"
    assert obj["status"]["summary"]["ready"] == "1/2"
    kubectl(env, "spoke2", "annotate", "mlservice", "-n", ns, "m", f"{READY_KNOB}-")
    await wait_condition(clients["hub"], ns, "svc", "Ready")


async def test_delete_cleans_up_spokes_and_removes_finalizer(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-delete"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "spoke2"], [mlservice("m"), configmap("c")])))
    await wait_condition(clients["hub"], ns, "svc", "Ready")
    kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--wait=false")

    async def all_gone() -> bool:
        if await get_hmls(clients["hub"], ns, "svc") is not None:
            return False
        for s in ("spoke1", "spoke2"):
            if await spoke_mlservice(clients[s], ns, "m") or await clients[s].get(CONFIGMAPS, ns, "c"):
                return False
        return True
    await eventually(all_gone, what="CR and spoke objects deleted")


async def test_orphan_policy_keeps_spoke_objects(env: Environment, clients: Clients,
                                                 controller: Controller) -> None:
    ns = "t-orphan"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1"], [configmap("c")]), deletionPolicy="Orphan"))
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s")
    assert await clients["spoke1"].get(CONFIGMAPS, ns, "c") is not None


async def test_kind_unknown_to_one_cluster(env: Environment, clients: Clients,
                                           controller: Controller) -> None:
    """The ingress cluster is joined as a cluster; it serves no MLService."""
    hmls_cli("cluster", "join", "ingress", "--kubeconfig", str(env.kubeconfig("hub")),
             "--cluster-kubeconfig", str(env.kubeconfig("ingress")), *AS_IS, check=False)
    ns = "t-unknown-kind"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "ingress"], [configmap("c"), mlservice("m")])))
    obj = await wait_condition(clients["hub"], ns, "svc", "FullyApplied", "False")

    async def settled() -> dict[str, object] | None:
        o = await get_hmls(clients["hub"], ns, "svc")
        return o if o and sum(i["applied"] for i in items(o)) == 3 else None
    obj = await eventually(settled, what="three of four applied")
    by = {(i["cluster"], i["resource"]["kind"]): i for i in items(obj)}
    assert by[("ingress", "MLService")]["applied"] is False
    assert by[("ingress", "MLService")]["appliedMessage"] == (
        "kind MLService in apiVersion tensorstack.dev/v1beta1 is not served by cluster ingress"
        " (is its CRD installed?)")
    assert by[("ingress", "ConfigMap")]["applied"] is True
    assert by[("spoke1", "MLService")]["applied"] is True
    assert "1 of 4 manifests not applied: ingress: MLService t-unknown-kind/m" in condition(
        obj, "FullyApplied")["message"]


def _register_raw(env: Environment, cluster: str, kubeconfig: dict[str, object]) -> None:
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": f"raw-{cluster}", "namespace": "hmls-system",
                     "labels": {CLUSTER_LABEL: cluster}},
        "data": {"kubeconfig": base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()},
    }
    kubectl(env, "hub", "apply", "-f", "-", input=yaml.safe_dump(secret))


async def test_unreachable_cluster_is_reported_and_others_apply(
        env: Environment, clients: Clients, controller: Controller) -> None:
    dead = yaml.safe_load(env.kubeconfig("spoke1").read_text())
    dead["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens
    _register_raw(env, "deadspoke", dead)
    ns = "t-unreachable"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "deadspoke"], [configmap("c")])))

    async def reported() -> dict[str, object] | None:
        o = await get_hmls(clients["hub"], ns, "svc")
        got = {i["cluster"]: i for i in items(o)} if o and o.get("status") else {}
        return o if got.get("spoke1", {}).get("applied") and "deadspoke" in got else None
    obj = await eventually(reported, what="spoke1 applied, deadspoke reported")
    dead_item = items(obj, "deadspoke")[0]
    assert dead_item["applied"] is False
    assert dead_item["appliedMessage"].startswith("cluster deadspoke is unreachable: ")
    assert "127.0.0.1:9" in dead_item["appliedMessage"]
    assert await clients["spoke1"].get(CONFIGMAPS, ns, "c") is not None
    assert condition(obj, "FullyApplied")["status"] == "False"
    metrics = controller.metrics()
    assert metrics['hmls_cluster_reachable{cluster="deadspoke"}'] == 0.0
    assert metrics['hmls_cluster_reachable{cluster="spoke1"}'] == 1.0


async def test_delete_with_unreachable_cluster_waits_then_orphan_escape(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """A cluster that holds objects and is down blocks the deletion (CleanupPending names it);
    the orphan annotation finishes it and leaves the objects there.  A cluster where nothing
    was ever created (deadspoke) does not block anything."""
    dead = yaml.safe_load(env.kubeconfig("spoke1").read_text())
    dead["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    _register_raw(env, "deadspoke", dead)
    hmls_cli("cluster", "join", "orphanme", "--kubeconfig", str(env.kubeconfig("hub")),
             "--cluster-kubeconfig", str(env.kubeconfig("spoke2")), *AS_IS)
    ns = "t-delete-pending"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "orphanme", "deadspoke"], [configmap("c")])))

    async def two_applied() -> bool:
        o = await get_hmls(clients["hub"], ns, "svc")
        return o is not None and bool(o.get("status")) and sum(
            i["applied"] for i in items(o)) == 2
    await eventually(two_applied, what="spoke1 and orphanme applied")
    env.stop_cluster("spoke2")
    try:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--wait=false")
        obj = await wait_condition(clients["hub"], ns, "svc", "CleanupPending", timeout=30)
        message = condition(obj, "CleanupPending")["message"]
        assert "orphanme" in message and ORPHAN_ANNOTATION in message
        assert "deadspoke" not in message
        created = items(obj, "orphanme")[0]
        assert created["applied"] is False and created["created"] is True
        assert await clients["spoke1"].get(CONFIGMAPS, ns, "c") is None  # reachable side cleaned
        kubectl(env, "hub", "annotate", "hmls", "-n", ns, "svc", f"{ORPHAN_ANNOTATION}=orphanme")

        async def gone() -> bool:
            return await get_hmls(clients["hub"], ns, "svc") is None
        await eventually(gone, what="deletion finishes with the orphan annotation")
    finally:
        env.start_cluster("spoke2")
    assert await clients["spoke2"].get(CONFIGMAPS, ns, "c") is not None  # orphaned, not deleted


async def test_unregistered_and_refused_clusters(env: Environment, clients: Clients,
                                                 controller: Controller, tmp_path: Path) -> None:
    marker = tmp_path / "exec-ran"
    hostile = yaml.safe_load(env.kubeconfig("spoke1").read_text())
    hostile["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh",
        "args": ["-c", f"touch {marker}; echo '{{}}'"]}}
    _register_raw(env, "hostile", hostile)
    ns = "t-refused"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "hostile", "nosuchcluster"], [configmap("c")])))

    async def reported() -> dict[str, object] | None:
        o = await get_hmls(clients["hub"], ns, "svc")
        return o if o and o.get("status") and len(items(o)) == 3 and items(o, "spoke1")[0][
            "applied"] else None
    obj = await eventually(reported, what="three items")
    assert items(obj, "hostile")[0]["appliedMessage"] == (
        "cluster hostile cannot be used: kubeconfig refused: "
        "user.exec runs a program on the controller's host")
    assert items(obj, "nosuchcluster")[0]["appliedMessage"] == (
        "cluster nosuchcluster is not registered (no Secret labelled "
        "hmls.tensorstack.dev/cluster=nosuchcluster in namespace hmls-system on the hub)")
    assert not marker.exists()
    metrics = controller.metrics()
    assert metrics['hmls_clusters{state="refused"}'] >= 1


async def test_object_owned_by_another_hypermlservice_is_a_conflict(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-conflict"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "first", (["spoke1"], [configmap("shared", v="first")])))
    await wait_condition(clients["hub"], ns, "first", "FullyApplied")
    create(env, hmls(ns, "second", (["spoke1"], [configmap("shared", v="second")])))
    obj = await wait_condition(clients["hub"], ns, "second", "FullyApplied", "False")
    assert items(obj)[0]["appliedMessage"] == (
        f"conflict: ConfigMap {ns}/shared on spoke1 is owned by another HyperMLService "
        f"({ns}/first)")
    cm = await clients["spoke1"].get(CONFIGMAPS, ns, "shared")
    assert cm is not None and cm["data"] == {"v": "first"}


async def test_restart_rewrites_nothing_unchanged(env: Environment, clients: Clients,
                                                  controller: Controller) -> None:
    ns = "t-restart"
    namespace_everywhere(env, ns)
    create(env, load_sample(ns))
    settled = await wait_condition(clients["hub"], ns, "hmls-sample", "Ready")
    resources = {"mlservices", "mlserviceruntimes", "secrets", "configmaps"}
    before = await requests(env, ["spoke1", "spoke2", "hub"])
    controller.stop()
    controller.start()

    async def reconciled() -> bool:
        m = controller.metrics()
        return m.get('hmls_reconcile_total{result="success"}', 0) >= 1 and \
            m.get("hmls_queue_depth", 1) == 0
    await eventually(reconciled, what="restarted controller reconciled")
    metrics = controller.metrics()
    assert metrics.get('hmls_apply_total{cluster="spoke1",result="unchanged"}', 0) >= 3
    assert 'hmls_apply_total{cluster="spoke1",result="applied"}' not in metrics
    assert metrics["hmls_status_writes_total"] == 0
    written = requests_delta(await requests(env, ["spoke1", "spoke2", "hub"]), before)
    assert {s: mutating(written[s], resources=resources) for s in ("spoke1", "spoke2")} == \
        {"spoke1": 0, "spoke2": 0}
    assert mutating(written["hub"], resources={"hypermlservices"}) == 0
    after = await get_hmls(clients["hub"], ns, "hmls-sample")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
