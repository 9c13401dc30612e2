"""What the tests share beyond their fixtures (tests/conftest.py) and the harness they share
with the benchmarks and the soak (hmls_devenv.harness): kubectl, hmls and kstatus as
subprocesses, a real Prometheus, and the builders and probes of the integration tests."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hmls_devenv import binaries
from hmls_devenv.environment import Environment, set_pdeathsig
from hmls_devenv.harness import eventually, free_port, wait_http
from hmls_devenv.simulator import MLSERVICE, READY_KNOB

from hmls.domain.models import API_VERSION, CLUSTER_LABEL, KIND, ORPHAN_ANNOTATION
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import HMLS, Resource

REPO = Path(__file__).resolve().parents[1]
FAST_PROBES = ("--probe-interval", "1")
"""The tests' controllers probe their clusters every second."""
AS_IS = ("--kubeconfig-as-is", "--trust-hub-namespaces")
"""How the session's clusters are joined: the admin kubeconfig stored, trusted mode (tests of
the minted identity and of tenant mode join clusters of their own)."""


def kubectl(env: Environment, cluster: str, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig(cluster)), *args],
                         input=input, capture_output=True, text=True, check=False, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
    return res


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) that kstatus' own rules (sigs.k8s.io/cli-utils status.Compute, as
    Flux, Argo CD and kpt read objects) give obj: status is Current, InProgress, Failed,
    Terminating or Unknown (what Compute cannot read is Unknown with its error)."""
    res = subprocess.run([str(binaries.ensure(binaries.KSTATUS))], input=json.dumps(obj),
                         capture_output=True, text=True, check=False, timeout=30)
    if res.returncode != 0:
        raise AssertionError(f"kstatus failed on {obj.get('kind')}: {res.stderr}")
    out = json.loads(res.stdout)
    return out["status"], out["message"]


def hmls_cli(*args: str, check: bool = True, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``hmls ARGS`` (``input``: its standard input, as ``-f -`` reads it)."""
    res = subprocess.run([sys.executable, "-m", "hmls", *args], input=input,
                         capture_output=True, text=True, check=False, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"hmls {' '.join(args)} failed: {res.stderr}")
    return res


def load_sample(namespace: str | None = None) -> dict[str, Any]:
    """The seed's hmls-sample (a fresh copy), moved with its manifests to namespace if given."""
    data: dict[str, Any] = yaml.safe_load((REPO / "config" / "samples" / "hmls-sample.yaml").read_text())
    if namespace:
        data["metadata"]["namespace"] = namespace
        for m in data["spec"]["workloads"][0]["manifests"]:
            m["metadata"]["namespace"] = namespace
    return data


class Prometheus:
    """A real Prometheus (Debian's /usr/bin/prometheus) with its own config, storage and port,
    scraping every second and evaluating rules every second; it dies with the tests.

    ``scrape`` maps a job name to the metrics URL it scrapes (e.g. ``Controller.metrics_url``,
    ``Environment.simulator_metrics_url``); ``rules`` are rule files to load.  Use it as a
    context manager (started on entry, stopped on exit)."""

    def __init__(self, workdir: Path, scrape: dict[str, str], *, rules: Sequence[Path] = ()) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).is_file():
            pytest.fail("prometheus is not installed: install Debian's `prometheus` package "
                        "(apt-get install -y prometheus); .ci/run installs it in CI")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.config = workdir / "prometheus.yml"
        jobs = []
        for job, url in scrape.items():
            parts = urllib.parse.urlsplit(url)
            jobs.append({"job_name": job, "scheme": parts.scheme, "metrics_path": parts.path,
                         "static_configs": [{"targets": [parts.netloc]}]})
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": jobs,
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with self.log.open("wb") as logf:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=set_pdeathsig)
        proc = self.proc
        try:
            wait_http(f"{self.url}/-/ready", lambda: proc.poll() is None, self.log, timeout=60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single sample of an instant query, or None when it has no result."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


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
