"""Builders and probes shared by the controller's integration tests."""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.simulator import MLSERVICE, READY_KNOB

from hmls.domain.models import API_VERSION, CLUSTER_LABEL, KIND, ORPHAN_ANNOTATION
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import HMLS, Resource
from tests.conftest import AS_IS, REPO, eventually, hmls_cli, kubectl

LIST_HEADER = ["NAME", "SERVER", "LABELS", "MODE", "PROFILE", "REACHABLE", "SINCE", "LAST SEEN",
               "VERSION", "HYPERMLSERVICES", "AWAITING GRANT", "LAST ERROR"]
Clients = dict[str, ClusterClient]
VS = Resource("networking.istio.io/v1beta1", "VirtualService", "virtualservices", namespaced=True)


def mlservice(name: str, *, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
        "metadata": {"name": name},
        "spec": {"default": "origin", "releases": [{
            "name": "origin",
            "predictor": {"minReplicas": replicas, "model": {"runtime": "t9k-torchserve"}}}]},
    }


def configmap(name: str, **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def hmls(namespace: str, name: str, *workloads: tuple[list[str], list[Obj]],
         **spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"workloads": [{"clusters": c, "manifests": m} for c, m in workloads], **spec},
    }


def namespace_everywhere(env: Environment, namespace: str) -> None:
    for cluster in env.state().clusters:
        kubectl(env, cluster, "create", "namespace", namespace, check=False)


def create(env: Environment, obj: Obj) -> None:
    kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(obj))


def replace_spec(env: Environment, obj: Obj) -> None:
    """Replace the whole spec (a JSON patch), as an edit in kubectl would."""
    patch = json.dumps([{"op": "replace", "path": "/spec", "value": obj["spec"]}])
    kubectl(env, "hub", "patch", "hmls", "-n", obj["metadata"]["namespace"],
            obj["metadata"]["name"], "--type=json", "-p", patch)


async def get_hmls(hub: ClusterClient, namespace: str, name: str) -> Obj | None:
    return await hub.get(HMLS, namespace, name)


def condition(obj: Obj | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return {}


async def wait_condition(hub: ClusterClient, namespace: str, name: str, ctype: str,
                         status: str = "True", *, timeout: float = 20.0) -> Obj:
    async def check() -> Obj | None:
        obj = await get_hmls(hub, namespace, name)
        cond = condition(obj, ctype)
        gen = (obj or {}).get("metadata", {}).get("generation")
        ok = (cond.get("status") == status and obj is not None
              and obj["status"].get("observedGeneration") == gen)
        return obj if ok else None

    result: Obj = await eventually(check, timeout=timeout,
                                   what=f"{namespace}/{name} {ctype}={status}")
    return result


def items(obj: Obj, cluster: str | None = None) -> list[dict[str, Any]]:
    return [i for i in obj["status"]["aggregatedStatus"]
            if cluster is None or i["cluster"] == cluster]


async def spoke_mlservice(client: ClusterClient, namespace: str, name: str) -> Obj | None:
    return await client.get(MLSERVICE, namespace, name)


_SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


async def write_requests(client: ClusterClient, resources: set[str]) -> float:
    """How many mutating requests the API server has served for these resources."""
    resp = await client._call("GET", "/metrics")
    try:
        text = (await resp.read()).decode()
    finally:
        resp.release()
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels.get("verb") in {"APPLY", "PATCH", "POST", "PUT", "DELETE", "CREATE", "UPDATE"} \
                and labels.get("resource") in resources:
            total += float(m["value"])
    return total


async def route_weights(client: ClusterClient, ns: str) -> dict[str, int] | None:
    items, _ = await client.list(VS, namespace=ns)
    if len(items) != 1:
        return None
    return {r["destination"]["host"].split(".")[3]: r["weight"]
            for r in items[0]["spec"]["http"][0]["route"]}


async def wait_weights(clients: dict[str, ClusterClient], ns: str, want: dict[str, int],
                       timeout: float = 30) -> None:
    async def check() -> bool:
        return await route_weights(clients["ingress"], ns) == want
    await eventually(check, timeout=timeout, what=f"VirtualService weights {want}")


_EVENT = re.compile(r"^\s+(?P<type>Normal|Warning)\s+(?P<reason>\S+)\s+\S+\s+(?P<source>\S+)\s+"
                    r"(?P<message>.*)$")


def described_events(env: Environment, namespace: str, name: str) -> list[dict[str, str]]:
    """The Events section of ``kubectl describe hmls``."""
    out = kubectl(env, "hub", "describe", "hmls", "-n", namespace, name).stdout
    _, _, section = out.partition("\nEvents:")
    return [m.groupdict() for line in section.splitlines() if (m := _EVENT.match(line))]


def not_registered(cluster: str) -> str:
    return (f"cluster {cluster} is not registered (no Secret labelled {CLUSTER_LABEL}={cluster}"
            " in namespace hmls-system on the hub)")


def hub(env: Environment) -> list[str]:
    return ["--kubeconfig", str(env.kubeconfig("hub"))]


def join(env: Environment, name: str, kubeconfig: Path, *extra: str
         ) -> subprocess.CompletedProcess[str]:
    return hmls_cli("cluster", "join", name, *hub(env), "--cluster-kubeconfig", str(kubeconfig),
                    *AS_IS, *extra, check=False)


def delete_leaving_objects(env: Environment, namespace: str, name: str) -> None:
    """Delete a HyperMLService whose clusters may no longer be registered."""
    kubectl(env, "hub", "annotate", "hmls", "-n", namespace, name, f"{ORPHAN_ANNOTATION}=*")
    kubectl(env, "hub", "delete", "hmls", "-n", namespace, name, "--timeout=20s")


def parse_table(lines: list[str], header: list[str]) -> list[dict[str, str]]:
    """Rows of a left-aligned table, cut at the header's column offsets."""
    head = lines[0]
    assert head.split() == " ".join(header).split(), head
    starts = [head.index(h) for h in header]
    ends = [*starts[1:], None]
    rows = lines[1:lines.index("")] if "" in lines else lines[1:]  # a blank line ends it
    return [{h: line[s:e].strip() for h, s, e in zip(header, starts, ends, strict=True)}
            for line in rows]


def cluster_rows(env: Environment) -> dict[str, dict[str, str]]:
    res = hmls_cli("cluster", "list", *hub(env))
    return {r["NAME"]: r for r in parse_table(res.stdout.splitlines(), LIST_HEADER)}


# ----- progressive rollouts ---------------------------------------------------------------
def progressive(ns: str, *, traffic: bool = True, **rollout: Any) -> Obj:
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [mlservice("svc")]),
               rollout={"strategy": "Progressive", "soakSeconds": 3,
                        "progressDeadlineSeconds": 30, **rollout})
    if traffic:
        obj["spec"]["traffic"] = {"ingressCluster": "ingress", "recoverySeconds": 0}
    return obj


def revised(obj: Obj, *, replicas: int = 2, ready: bool = True,
            knobs: dict[str, str] | None = None) -> Obj:
    """The CR with a new revision of its MLService; ``knobs``: simulator annotations (a model
    that answers with errors or slowly)."""
    new = copy.deepcopy(obj)
    manifest = mlservice("svc", replicas=replicas)
    annotations = {**(knobs or {}), **({} if ready else {READY_KNOB: "false"})}
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    new["spec"]["workloads"][0]["manifests"] = [manifest]
    return new


async def phase(clients: Clients, ns: str, cluster: str, want: str, *,
                timeout: float = 30) -> Obj:
    async def check() -> Obj | None:
        obj = await get_hmls(clients["hub"], ns, "svc")
        steps = ((obj or {}).get("status") or {}).get("rollout", {}).get("clusters") or []
        return obj if any(s["cluster"] == cluster and s["phase"] == want for s in steps) \
            else None
    found: Obj = await eventually(check, timeout=timeout, interval=0.1,
                                  what=f"{cluster} {want}")
    return found


async def rolled_out(clients: Clients, ns: str, revision: int) -> Obj:
    obj = await wait_condition(clients["hub"], ns, "svc", "RolledOut", timeout=40)
    assert obj["status"]["rollout"]["currentRevision"] == revision
    return obj


def hub_namespace(env: Environment, ns: str) -> None:
    kubectl(env, "hub", "create", "namespace", ns, check=False)


def delete(env: Environment, ns: str) -> None:
    kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=30s", check=False)


def service_account_credentials(env: Environment, namespace: str, name: str) -> tuple[str, str, str]:
    """A fresh token (1 h) of the hub's ServiceAccount namespace/name, and the hub's server and
    CA bundle (base64 PEM): what a pod of that ServiceAccount is given."""
    token = kubectl(env, "hub", "create", "token", name, "-n", namespace,
                    "--duration=1h").stdout.strip()
    hub = yaml.safe_load(env.kubeconfig("hub").read_text())
    cluster = hub["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data") or base64.b64encode(
        Path(cluster["certificate-authority"]).read_bytes()).decode()
    return token, cluster["server"], ca


# ----- config/ (kustomize) ------------------------------------------------------------------
CONFIG = REPO / "config"
CONFIG_NAMESPACE = "hmls-system"
"""The controller's namespace in config/default."""
Docs = list[dict[str, Any]]


def render(directory: str) -> Docs:
    """``kubectl kustomize config/<directory>``: the objects, in order."""
    res = subprocess.run(["kubectl", "kustomize", str(CONFIG / directory)], capture_output=True,
                         text=True, check=False, timeout=60)
    assert res.returncode == 0, f"kubectl kustomize config/{directory} failed: {res.stderr}"
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]
