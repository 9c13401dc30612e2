"""Fleets against real API servers: cluster labels and selectors that follow join, relabel
and unjoin; per-cluster overrides read back from each spoke; ``hmls diff`` that writes
nothing; and ClusterProfiles as a second source of cluster names, labels and health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.simulator import MLSERVICE

from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import CONFIGMAPS, Resource
from tests.helpers import (
    cluster_rows,
    configmap,
    create,
    get_hmls,
    hmls,
    hmls_cli,
    hub,
    items,
    join,
    kubectl,
    mlservice,
    not_registered,
    phase,
    progressive,
    replace_spec,
    revised,
    rolled_out,
    wait_condition,
)

Clients = dict[str, ClusterClient]
SEL = "hmls-test/fleet"
PROFILES = Path(__file__).with_name("clusterprofiles.yaml")
CLUSTER_PROFILES = Resource("multicluster.x-k8s.io/v1alpha1", "ClusterProfile",
                            "clusterprofiles", namespaced=True)


def selected(namespace: str, name: str, selector: dict[str, Any], manifests: list[Obj],
             **spec: Any) -> Obj:
    obj = hmls(namespace, name, ([], manifests), **spec)
    obj["spec"]["workloads"][0] = {"clusterSelector": selector, "manifests": manifests}
    return obj


def hub_namespace(env: Environment, namespace: str) -> None:
    kubectl(env, "hub", "create", "namespace", namespace, check=False)


async def placed(clients: Clients, ns: str, name: str, want: list[str]) -> Obj:
    async def check() -> Obj | None:
        obj = await get_hmls(clients["hub"], ns, name)
        placements = ((obj or {}).get("status") or {}).get("placements") or [{}]
        return obj if placements[0].get("clusters") == want else None
    found: Obj = await eventually(check, timeout=20, what=f"{ns}/{name} placed on {want}")
    return found


async def on_spoke(client: ClusterClient, ns: str, name: str, present: bool) -> None:
    async def check() -> bool:
        return (await client.get(CONFIGMAPS, ns, name) is not None) == present
    await eventually(check, timeout=20, what=f"ConfigMap {ns}/{name} present={present}")


def unjoin(env: Environment, *names: str) -> None:
    for name in names:
        hmls_cli("cluster", "unjoin", name, "--force", *hub(env), check=False)


# ----- selectors follow the fleet ------------------------------------------------------------
async def test_selectors_follow_join_relabel_and_unjoin(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-fleet-select"
    hub_namespace(env, ns)
    try:
        res = join(env, "eu1", env.kubeconfig("spoke1"), "--label", f"{SEL}=on",
                   "--label", "region=eu")
        assert res.returncode == 0, res.stderr
        create(env, selected(ns, "svc", {"matchLabels": {SEL: "on"}}, [configmap("c", k="v")]))
        obj = await placed(clients, ns, "svc", ["eu1"])
        assert obj["status"]["placements"] == [
            {"workload": 0, "selector": f"{SEL}=on", "clusters": ["eu1"]}]
        await on_spoke(clients["spoke1"], ns, "c", True)
        assert await clients["spoke2"].get(CONFIGMAPS, ns, "c") is None

        # a cluster that joins with a matching label gets the workload
        assert join(env, "us1", env.kubeconfig("spoke2"), "--label", f"{SEL}=on").returncode == 0
        await placed(clients, ns, "svc", ["eu1", "us1"])
        await on_spoke(clients["spoke2"], ns, "c", True)
        rows = cluster_rows(env)
        assert rows["eu1"]["LABELS"] == f"{SEL}=on,region=eu"
        assert rows["us1"]["HYPERMLSERVICES"] == "1"

        # relabelled so that it stops matching: pruned as a removed cluster is
        res = hmls_cli("cluster", "label", "us1", f"{SEL}-", *hub(env))
        assert res.stdout == "cluster us1 labelled: -\n"
        await placed(clients, ns, "svc", ["eu1"])
        await on_spoke(clients["spoke2"], ns, "c", False)

        # kubectl label on the registration Secret works the same way
        kubectl(env, "hub", "label", "secret", "-n", "hmls-system", "cluster-us1", f"{SEL}=on")
        await placed(clients, ns, "svc", ["eu1", "us1"])
        await on_spoke(clients["spoke2"], ns, "c", True)

        # unjoined: no longer a target; its objects wait for credentials, named in status
        unjoin(env, "eu1")
        obj = await placed(clients, ns, "svc", ["us1"])
        assert {i["cluster"] for i in items(obj)} == {"us1"}

        async def pending() -> list[Any] | None:
            got = await get_hmls(clients["hub"], ns, "svc")
            waiting = (got or {}).get("status", {}).get("pendingDeletions")
            return waiting or None
        [waiting] = await eventually(pending, timeout=20, what="pending deletion on eu1")
        assert waiting["cluster"] == "eu1"
        assert waiting["message"] == not_registered("eu1")
        assert await clients["spoke1"].get(CONFIGMAPS, ns, "c") is not None
        # joined again without the label: hmls can reach it, and prunes what it left there
        assert join(env, "eu1", env.kubeconfig("spoke1")).returncode == 0
        await on_spoke(clients["spoke1"], ns, "c", False)
        obj = await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
        assert "pendingDeletions" not in obj["status"]
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s", check=False)
        unjoin(env, "eu1", "us1")


def test_a_selector_is_checked_at_admission(env: Environment) -> None:
    ns = "t-fleet-admission"
    hub_namespace(env, ns)
    neither = hmls(ns, "neither", ([], [configmap("c")]))
    res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(neither), check=False)
    assert res.returncode != 0
    assert "a workload needs clusters or clusterSelector" in res.stderr
    bad = selected(ns, "bad", {"matchExpressions": [{"key": "region", "operator": "In"}]},
                   [configmap("c")])
    res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert "In and NotIn need values" in res.stderr
    both = hmls(ns, "both", (["spoke1"], [configmap("c")]))
    both["spec"]["workloads"][0]["overrides"] = [
        {"clusters": ["spoke1"], "mergePatch": {}, "jsonPatch": []}]
    res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(both), check=False)
    assert "an override needs exactly one of mergePatch and jsonPatch" in res.stderr


# ----- overrides ---------------------------------------------------------------------------------
async def test_overrides_give_one_region_its_own_spec_and_a_broken_one_fails_alone(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-fleet-override"
    hub_namespace(env, ns)
    hmls_cli("cluster", "label", "spoke1", "region=eu", *hub(env))
    hmls_cli("cluster", "label", "spoke2", "region=us", *hub(env))
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("cfg", bucket="s3://models"),
                                                  mlservice("svc")]))
    overrides: list[dict[str, Any]] = [
        {"clusterSelector": {"matchLabels": {"region": "us"}}, "target": {"kind": "ConfigMap"},
         "mergePatch": {"data": {"bucket": "s3://models-${cluster.labels.region}",
                                 "cluster": "${cluster.name}"}}},
        {"clusters": ["spoke2"], "target": {"kind": "MLService", "name": "svc"},
         "jsonPatch": [{"op": "replace", "path": "/spec/releases/0/predictor/minReplicas",
                        "value": 3}]},
    ]
    obj["spec"]["workloads"][0]["overrides"] = overrides
    try:
        create(env, obj)
        await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
        eu = await clients["spoke1"].get(CONFIGMAPS, ns, "cfg")
        us = await clients["spoke2"].get(CONFIGMAPS, ns, "cfg")
        assert eu is not None and us is not None
        assert eu["data"] == {"bucket": "s3://models"}
        assert us["data"] == {"bucket": "s3://models-us", "cluster": "spoke2"}
        replicas = {}
        for spoke in ("spoke1", "spoke2"):
            got = await clients[spoke].get(MLSERVICE, ns, "svc")
            assert got is not None
            replicas[spoke] = got["spec"]["releases"][0]["predictor"]["minReplicas"]
        assert replicas == {"spoke1": 1, "spoke2": 3}

        # a patch that cannot apply on spoke1 fails that item only, and harms nothing else
        overrides.append({"clusters": ["spoke1"], "target": {"kind": "ConfigMap", "name": "cfg"},
                          "jsonPatch": [{"op": "remove", "path": "/data/nope"}]})
        obj["spec"]["workloads"][0]["overrides"] = overrides
        replace_spec(env, obj)
        got = await wait_condition(clients["hub"], ns, "svc", "FullyApplied", "False")
        failed = [(i["cluster"], i["resource"]["kind"], i["appliedMessage"])
                  for i in items(got) if not i["applied"]]
        assert failed == [("spoke1", "ConfigMap",
                           "workloads[0].overrides[2]: operation 0 (remove /data/nope): path "
                           "does not exist (on workloads[0].manifests[0])")]
        assert sum(i["applied"] for i in items(got)) == 3
        still = await clients["spoke1"].get(CONFIGMAPS, ns, "cfg")
        assert still is not None and still["data"] == {"bucket": "s3://models"}
        assert still["metadata"]["resourceVersion"] == eu["metadata"]["resourceVersion"]
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s", check=False)
        for spoke in ("spoke1", "spoke2"):
            hmls_cli("cluster", "label", spoke, "region-", *hub(env), check=False)


# ----- diff ----------------------------------------------------------------------------------------
def diff(env: Environment, *args: str, input: str | None = None) -> tuple[int, list[str]]:
    res = hmls_cli("diff", *args, *hub(env), input=input, check=False)
    return res.returncode, (res.stdout + res.stderr).splitlines()


async def test_diff_shows_what_would_change_and_writes_nothing(
        env: Environment, clients: Clients, controller: Controller, tmp_path: Path) -> None:
    ns = "t-fleet-diff"
    hub_namespace(env, ns)
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("c", k="v")]))
    path = tmp_path / "svc.yaml"

    def file(o: Obj) -> str:
        path.write_text(yaml.safe_dump(o))
        return str(path)

    try:
        create(env, obj)
        await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
        versions = {}
        for spoke in ("spoke1", "spoke2"):
            live = await clients[spoke].get(CONFIGMAPS, ns, "c")
            assert live is not None
            versions[spoke] = live["metadata"]["resourceVersion"]

        code, out = diff(env, "-f", file(obj))
        assert code == 0, out
        assert out == ["cluster spoke1:", f"  = ConfigMap {ns}/c unchanged",
                       "cluster spoke2:", f"  = ConfigMap {ns}/c unchanged", "no changes"]
        assert diff(env, f"{ns}/svc")[0] == 0

        changed = hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("c", k="w"),
                                                          configmap("d", k="new")]))
        code, out = diff(env, "-f", file(changed))
        assert code == 1, out
        assert out.count(f"  ~ ConfigMap {ns}/c changed") == 2
        assert out.count(f"  + ConfigMap {ns}/d created") == 2
        assert "    -  k: v" in out and "    +  k: w" in out
        assert out[-1] == "4 changes"

        moved = hmls(ns, "svc", (["spoke1"], [configmap("c", k="v")]))
        code, out = diff(env, "-f", file(moved))
        assert code == 1 and f"  - ConfigMap {ns}/c pruned" in out, out
        assert out[out.index("cluster spoke2:") + 1] == f"  - ConfigMap {ns}/c pruned"

        broken = hmls(ns, "svc", (["nosuch"], [configmap("c")]))
        code, out = diff(env, "-f", file(broken))
        assert code == 2 and "  ! cluster nosuch cannot be used: not registered" in out, out

        # nothing was written: the spokes' objects are as they were, nothing new anywhere
        for spoke in ("spoke1", "spoke2"):
            live = await clients[spoke].get(CONFIGMAPS, ns, "c")
            assert live is not None and live["metadata"]["resourceVersion"] == versions[spoke]
            assert live["data"] == {"k": "v"}
            assert await clients[spoke].get(CONFIGMAPS, ns, "d") is None
        stored = await get_hmls(clients["hub"], ns, "svc")
        assert stored is not None and stored["metadata"]["generation"] == 1
        assert stored["spec"]["workloads"] == obj["spec"]["workloads"]
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s", check=False)


async def test_diff_answers_as_the_controller_mid_rollout_and_for_a_refused_kind(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """hmls diff runs the controller's plan phase: mid-rollout a cluster waiting for its step
    is diffed at the revision the controller applies there now, and a kind the cluster's
    access policy refuses is refused by both, in the same words."""
    ns = "t-fleet-diff-plan"
    hub_namespace(env, ns)
    obj = progressive(ns, traffic=False, soakSeconds=1, order=["spoke1", "spoke2"])
    refused = hmls(ns, "roles", (["spoke1"], [{
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "hmls-test-refused"}, "rules": []}]))
    try:
        create(env, obj)
        await rolled_out(clients, ns, 1)
        slow = revised(obj)  # revision 2: spoke1 soaks it for a minute
        slow["spec"]["rollout"]["soakSeconds"] = 60
        replace_spec(env, slow)
        await phase(clients, ns, "spoke1", "Soaking")
        code, out = diff(env, f"{ns}/svc")
        assert code == 0, out  # what the controller applies now is on the clusters
        assert out == ["cluster spoke1: revision 2", f"  = MLService {ns}/svc unchanged",
                       "cluster spoke2: revision 2 waits for its rollout step (runs revision 1)",
                       f"  = MLService {ns}/svc unchanged", "no changes"], out

        code, out = diff(env, "-f", "-", input=yaml.safe_dump(refused))
        why = ("ClusterRole is cluster-scoped on cluster spoke1; refused unless the cluster "
               'Secret has hmls.tensorstack.dev/allow-cluster-scoped: "true"')
        assert code == 2 and f"  ! ClusterRole hmls-test-refused: {why}" in out, out
        create(env, refused)
        got = await wait_condition(clients["hub"], ns, "roles", "FullyApplied", "False")
        assert items(got)[0]["appliedMessage"] == why
    finally:
        for name in ("svc", "roles"):
            kubectl(env, "hub", "delete", "hmls", "-n", ns, name, "--timeout=30s", check=False)


# ----- ClusterProfiles ---------------------------------------------------------------------
def cluster_profile(name: str, labels: dict[str, str], healthy: bool, message: str) -> Obj:
    return {
        "apiVersion": CLUSTER_PROFILES.api_version, "kind": "ClusterProfile",
        "metadata": {"name": name, "namespace": "fleet-inventory", "labels": labels},
        "spec": {"displayName": name, "clusterManager": {"name": "test-inventory"}},
        "status": {"version": {"kubernetes": "v1.34.4"}, "conditions": [{
            "type": "ControlPlaneHealthy", "status": "True" if healthy else "False",
            "reason": "Probed", "message": message,
            "lastTransitionTime": "2026-12-01T00:00:00Z"}]},
    }


async def test_cluster_profiles_name_label_and_report_clusters(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns, label = "t-fleet-profiles", "hmls-test/profile"
    hub_namespace(env, ns)
    kubectl(env, "hub", "apply", "-f", str(PROFILES))
    kubectl(env, "hub", "wait", "--for=condition=established", "--timeout=20s",
            "crd/clusterprofiles.multicluster.x-k8s.io")
    hub_namespace(env, "fleet-inventory")
    for profile in (cluster_profile("spoke1", {label: "gold"}, True, "answering"),
                    cluster_profile("ghost", {label: "gold"}, False, "apiserver down")):
        kubectl(env, "hub", "apply", "-f", "-", input=yaml.safe_dump(profile))
    controller.stop()  # the controller looks for the ClusterProfile API when it starts
    controller.start()
    try:
        create(env, selected(ns, "svc", {"matchLabels": {label: "gold"}}, [configmap("c")]))
        obj = await placed(clients, ns, "svc", ["ghost", "spoke1"])
        await on_spoke(clients["spoke1"], ns, "c", True)
        obj = await wait_condition(clients["hub"], ns, "svc", "FullyApplied", "False")
        messages = {i["cluster"]: (i["applied"], i["appliedMessage"]) for i in items(obj)}
        assert messages["spoke1"][0] is True
        assert messages["ghost"] == (False, "cluster ghost has a ClusterProfile "
                                     f"(fleet-inventory/ghost) but no credentials: "
                                     f"{not_registered('ghost')}")
        # hmls diff places by the ClusterProfile's labels too, as the controller did
        code, out = diff(env, f"{ns}/svc")
        assert code == 2 and out[:3] == [
            "cluster ghost:", "  ! cluster ghost cannot be used: not registered",
            "cluster spoke1:"], out
        assert f"  = ConfigMap {ns}/c unchanged" in out
        rows = cluster_rows(env)
        assert rows["spoke1"]["PROFILE"] == "healthy (fleet-inventory)"
        assert f"{label}=gold" in rows["spoke1"]["LABELS"].split(",")
        assert rows["ghost"]["PROFILE"] == "unhealthy (fleet-inventory)"
        assert rows["ghost"]["LAST ERROR"] == ("no registration Secret: hmls has no credentials "
                                               "(apiserver down)")
        # the registration Secret's labels win over the profile's
        hmls_cli("cluster", "label", "spoke1", f"{label}=silver", *hub(env))
        await placed(clients, ns, "svc", ["ghost"])
        await on_spoke(clients["spoke1"], ns, "c", False)
    finally:
        hmls_cli("cluster", "label", "spoke1", f"{label}-", *hub(env), check=False)
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s", check=False)
        kubectl(env, "hub", "delete", "-f", str(PROFILES), "--wait=true", check=False)
        controller.stop()
        controller.start()
