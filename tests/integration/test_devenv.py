"""The local environment is real: built API servers, CRD validation through kubectl,
server-side apply through kubernetes-asyncio, and the MLService simulator."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hmls_devenv import binaries
from hmls_devenv.environment import Environment
from hmls_devenv.harness import eventually
from hmls_devenv.simulator import MLSERVICE, READY_KNOB

from hmls.domain.health import health
from hmls.kube import errors
from hmls.kube.client import ClusterClient
from hmls.kube.resources import CONFIGMAPS
from tests.helpers import kubectl, load_sample


async def test_api_servers_report_the_built_version(env: Environment,
                                                    clients: dict[str, ClusterClient]) -> None:
    assert set(clients) == {"hub", "spoke1", "spoke2", "ingress"}
    for client in clients.values():
        assert (await client.version())["gitVersion"] == binaries.KUBE_VERSION
    assert binaries.cached_path(binaries.KUBE_APISERVER).is_file()
    assert binaries.cached_path(binaries.ETCD).is_file()


def test_each_cluster_has_its_own_storage(env: Environment) -> None:
    kubectl(env, "spoke1", "create", "namespace", "only-on-spoke1")
    names = kubectl(env, "spoke2", "get", "namespaces", "-o", "name").stdout
    assert "only-on-spoke1" not in names
    assert "only-on-spoke1" in kubectl(env, "spoke1", "get", "namespaces", "-o", "name").stdout


def test_crds_installed_per_role(env: Environment) -> None:
    def crds(cluster: str) -> set[str]:
        out = kubectl(env, cluster, "get", "crd", "-o", "name").stdout.split()
        return {n.removeprefix("customresourcedefinition.apiextensions.k8s.io/") for n in out}

    assert crds("hub") == {"hypermlservices.tensorstack.dev"}
    assert crds("spoke1") == {"mlservices.tensorstack.dev", "mlserviceruntimes.tensorstack.dev"}
    # the real Istio and Gateway API CRDs, from their Go modules
    assert crds("ingress") >= {"serviceentries.networking.istio.io",
                               "virtualservices.networking.istio.io",
                               "httproutes.gateway.networking.k8s.io"}


def test_kubectl_creates_the_seed_sample(env: Environment) -> None:
    sample = load_sample()
    sample["metadata"]["namespace"] = "devenv-seed"
    kubectl(env, "hub", "create", "namespace", "devenv-seed")
    kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(sample))
    out = kubectl(env, "hub", "get", "hmls", "-n", "devenv-seed").stdout
    header = out.splitlines()[0].split()
    assert header[:4] == ["NAME", "CLUSTERS", "APPLIED", "READY"]
    assert out.splitlines()[1].startswith("hmls-sample")


def _invalid(mutate: str) -> dict[str, object]:
    sample = load_sample()
    sample["metadata"]["namespace"] = "devenv-seed"
    sample["metadata"]["name"] = "bad"
    wl = sample["spec"]["workloads"][0]
    if mutate == "no-clusters":
        wl["clusters"] = []
    elif mutate == "duplicate-clusters":
        wl["clusters"] = ["spoke1", "spoke2", "spoke1"]
    elif mutate == "no-apiVersion":
        del wl["manifests"][0]["apiVersion"]
    elif mutate == "no-kind":
        del wl["manifests"][0]["kind"]
    elif mutate == "no-name":
        del wl["manifests"][0]["metadata"]["name"]
    elif mutate == "generateName":
        wl["manifests"][0]["metadata"]["generateName"] = "x-"
    elif mutate == "no-workloads":
        sample["spec"]["workloads"] = []
    return sample


@pytest.mark.parametrize(("mutate", "message"), [
    ("no-workloads", "spec.workloads in body should have at least 1 items"),
    ("no-clusters", "spec.workloads[0]: Invalid value: \"object\": a workload needs clusters or "
                    "clusterSelector"),
    ("duplicate-clusters",
     'spec.workloads[0].clusters: Invalid value: "array": cluster names in a workload must be unique'),
    ("no-apiVersion", "spec.workloads[0].manifests[0].apiVersion: Required value"),
    ("no-kind", "spec.workloads[0].manifests[0].kind: Required value"),
    ("no-name", "spec.workloads[0].manifests[0].metadata.name: Required value"),
    ("generateName", "generateName is not supported"),
])
def test_kubectl_refuses_invalid_hypermlservices(env: Environment, mutate: str,
                                                  message: str) -> None:
    kubectl(env, "hub", "create", "namespace", "devenv-seed", check=False)
    res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(_invalid(mutate)),
                  check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


async def test_server_side_apply_and_simulator(env: Environment,
                                               clients: dict[str, ClusterClient]) -> None:
    spoke = clients["spoke1"]
    kubectl(env, "spoke1", "create", "namespace", "devenv-ssa")
    manifest = copy.deepcopy(load_sample()["spec"]["workloads"][0]["manifests"][2])
    manifest["metadata"]["namespace"] = "devenv-ssa"
    applied = await spoke.apply(manifest, field_manager="test")
    assert applied["metadata"]["managedFields"][0]["manager"] == "test"

    async def status() -> dict[str, object] | None:
        obj = await spoke.get(MLSERVICE, "devenv-ssa", "torch-mnist-s3")
        return obj.get("status") if obj else None

    ready = await eventually(lambda: _ready(status), what="simulator sets Ready")
    assert ready["address"]["url"] == "http://torch-mnist-s3.devenv-ssa.ksvc.spoke1.t9kcloud.cn"
    assert ready["releases"] == [{
        "name": "origin", "ready": True, "readyReplicas": 1, "totalReplicas": 1,
        "trafficPercent": 100,
        "url": "http://torch-mnist-s3-predict-origin.devenv-ssa.ksvc.spoke1.t9kcloud.cn"}]

    # the knob makes it go not-ready, and removing it recovers
    kubectl(env, "spoke1", "annotate", "mlservice", "-n", "devenv-ssa", "torch-mnist-s3",
            f"{READY_KNOB}=false")
    await eventually(lambda: _ready(status, want=False), what="simulator sets not Ready")
    kubectl(env, "spoke1", "annotate", "mlservice", "-n", "devenv-ssa", "torch-mnist-s3",
            f"{READY_KNOB}-")
    await eventually(lambda: _ready(status), what="simulator recovers")


async def test_a_conditional_delete_spares_an_object_changed_since_the_read(
        env: Environment, clients: dict[str, ClusterClient]) -> None:
    spoke = clients["spoke1"]
    kubectl(env, "spoke1", "create", "namespace", "devenv-delete")
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "taken", "namespace": "devenv-delete"},
                          "data": {"owner": "a"}}
    read = (await spoke.apply(cm, field_manager="test"))["metadata"]
    cm["data"]["owner"] = "b"  # another owner takes it over between the read and the delete
    await spoke.apply(cm, field_manager="test")
    with pytest.raises(errors.Conflict):
        await spoke.delete(CONFIGMAPS, "devenv-delete", "taken", uid=read["uid"],
                           resource_version=read["resourceVersion"])
    taken = await spoke.get(CONFIGMAPS, "devenv-delete", "taken")
    assert taken is not None and taken["data"] == {"owner": "b"}
    fresh = taken["metadata"]
    assert await spoke.delete(CONFIGMAPS, "devenv-delete", "taken", uid=fresh["uid"],
                              resource_version=fresh["resourceVersion"])
    assert await spoke.get(CONFIGMAPS, "devenv-delete", "taken") is None


async def _ready(status_fn, want: bool = True):  # type: ignore[no-untyped-def]
    status = await status_fn()
    verdict = health({"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
                      "status": status})
    return status if status and verdict is not None and verdict.ready is want else None


def test_up_twice_is_idempotent(env: Environment) -> None:
    before = env.state()
    again = Environment(env.dir).up()
    assert again.clusters["hub"].pid == before.clusters["hub"].pid
    assert again.etcd_pid == before.etcd_pid


def test_down_stops_every_process(tmp_path: Path) -> None:
    other = Environment(tmp_path / "env", die_with_parent=True)
    state = other.up(spokes=1)
    pids = [state.etcd_pid, state.simulator_pid, *(c.pid for c in state.clusters.values())]
    assert len(pids) == 5
    assert all(Path(f"/proc/{p}").exists() for p in pids)
    assert (tmp_path / "env" / "spoke1.kubeconfig").is_file()
    other.down()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert stat.split(") ", 1)[1].startswith("Z"), f"pid {pid} still running"
    assert not other.state_path.exists()
