"""A hub namespace gets on a spoke only what the cluster's policy grants, against real API
servers that allow privileged containers (as usual clusters do), so that each refusal here
could fail: a RoleBinding to cluster-admin and a privileged hostPath Pod are refused and never
reach the spoke, while the seed sample next to them is applied and Ready."""

from __future__ import annotations

import subprocess
from typing import Any

from hmls.devenv.environment import Environment
from hmls.devenv.simulator import MLSERVICE
from hmls.domain.access import ALLOW_HOST_ACCESS, ALLOWED_KINDS, DENIED_KINDS
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import Resource
from tests.conftest import Controller, eventually, hmls_cli, kubectl, load_sample
from tests.integration.helpers import create, get_hmls, hub, items, join, wait_condition

Clients = dict[str, ClusterClient]
PODS = Resource("v1", "Pod", "pods", namespaced=True)
ROLEBINDINGS = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings",
                        namespaced=True)


def escalation(ns: str) -> list[Obj]:
    """What the issue's tenant tried: cluster-admin for mallory, root on the node."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "mallory-admin", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "cluster-admin"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "mallory"}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rootshell", "namespace": ns},
         "spec": {"hostPID": True, "hostNetwork": True,
                  "containers": [{"name": "sh", "image": "busybox",
                                  "securityContext": {"privileged": True},
                                  "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                  "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}},
    ]


def sample_with(ns: str, clusters: list[str], extra: list[Obj]) -> Obj:
    obj = load_sample(ns)
    workload = obj["spec"]["workloads"][0]
    workload["clusters"] = clusters
    workload["manifests"] += extra
    return obj


def can_i(env: Environment, cluster: str, ns: str, user: str) -> str:
    res = subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig(cluster)), "auth",
                          "can-i", "*", "*", "-n", ns, "--as", user],
                         capture_output=True, text=True, timeout=30, check=False)
    return res.stdout.strip()


def messages(obj: Obj) -> dict[str, tuple[bool, str]]:
    return {i["resource"]["kind"]: (i["applied"], i["appliedMessage"]) for i in items(obj)}


async def test_rbac_and_host_access_are_refused_and_the_sample_still_runs(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-tenancy-default"
    kubectl(env, "hub", "create", "namespace", ns, check=False)
    try:
        create(env, sample_with(ns, ["spoke1"], escalation(ns)))
        obj = await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied", "False")
        got = messages(obj)
        assert got["RoleBinding"] == (False, (
            "RoleBinding.rbac.authorization.k8s.io is refused on cluster spoke1: hmls would "
            f"grant it with its own credentials; name it in the cluster Secret's {ALLOWED_KINDS}"
            " to allow it"))
        assert got["Pod"] == (False, (
            "Pod asks for host access on cluster spoke1 (hostNetwork: true, hostPID: true, "
            "hostPath volume 'root', privileged container 'sh'); refused unless the cluster "
            f'Secret has {ALLOW_HOST_ACCESS}: "true"'))
        assert all(got[k][0] for k in ("MLServiceRuntime", "Secret", "MLService"))

        async def mlservice_ready() -> bool:
            now = await get_hmls(clients["hub"], ns, "hmls-sample")
            return any(i["resource"]["kind"] == "MLService" and i.get("ready")
                       for i in items(now or {"status": {"aggregatedStatus": []}}))
        await eventually(mlservice_ready, timeout=30, what="the sample's MLService Ready")
        # read back: neither reached the spoke, and mallory has nothing there
        assert await clients["spoke1"].get(ROLEBINDINGS, ns, "mallory-admin") is None
        assert await clients["spoke1"].get(PODS, ns, "rootshell") is None
        assert await clients["spoke1"].get(MLSERVICE, ns, "torch-mnist-s3") is not None
        assert can_i(env, "spoke1", ns, "mallory") == "no"
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s",
                check=False)


async def test_an_operator_opts_in_or_denies_by_kind(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """The same refusals are the policy's: allowed by the operator, the spoke takes the Pod
    (the servers really allow privileged containers); a deny list refuses a plain Secret."""
    ns, open_, closed = "t-tenancy-policy", "spoke2open", "spoke2closed"
    kubectl(env, "hub", "create", "namespace", ns, check=False)
    assert join(env, open_, env.kubeconfig("spoke2")).returncode == 0
    assert join(env, closed, env.kubeconfig("spoke1")).returncode == 0
    annotate: list[tuple[str, dict[str, Any]]] = [
        (open_, {ALLOW_HOST_ACCESS: "true"}),
        (closed, {DENIED_KINDS: "Secret", ALLOWED_KINDS: "*.tensorstack.dev,Secret"})]
    for name, ann in annotate:
        kubectl(env, "hub", "annotate", "secret", "-n", "hmls-system", f"cluster-{name}",
                *[f"{k}={v}" for k, v in ann.items()])
    try:
        pod = escalation(ns)[1]
        create(env, sample_with(ns, [open_, closed], [pod]))
        obj = await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied", "False")
        by = {(i["cluster"], i["resource"]["kind"]): (i["applied"], i["appliedMessage"])
              for i in items(obj)}
        assert by[(open_, "Pod")][0] is True
        assert await clients["spoke2"].get(PODS, ns, "rootshell") is not None
        assert by[(closed, "Secret")] == (False, (
            f"Secret is refused on cluster {closed} by its Secret's {DENIED_KINDS} (Secret)"))
        assert by[(closed, "Pod")] == (False, (
            f"Pod is not among the kinds cluster {closed} accepts (its Secret's {ALLOWED_KINDS}: "
            "*.tensorstack.dev, Secret)"))
        assert by[(closed, "MLService")][0] is True
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s",
                check=False)
        for name in (open_, closed):
            hmls_cli("cluster", "unjoin", name, "--force", *hub(env), check=False)
