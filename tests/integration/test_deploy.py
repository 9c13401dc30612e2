"""The deployable controller in config/: rendered with ``kubectl kustomize``, applied for real
to the local hub (server-side apply), its RBAC checked by impersonating the ServiceAccount
(allowed: exactly what the controller does on the hub; nothing else), the Deployment checked
by the API server (server-side dry-run, PodSecurity "restricted"), the controller run with the
ServiceAccount's own token, and the Prometheus rules checked by promtool.

The hub has no scheduler or controller-manager, so the Deployment never gets pods; that is
expected here.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually

from hmls.domain.models import FINALIZER
from hmls.kube.client import ClusterClient
from hmls.kube.leader import lease_name
from tests.helpers import (
    CONFIG,
    CONFIG_NAMESPACE,
    FAST_PROBES,
    Docs,
    condition,
    configmap,
    create,
    get_hmls,
    hmls,
    kubectl,
    namespace_everywhere,
    one,
    render,
    service_account_credentials,
    wait_condition,
)

NAMESPACE = CONFIG_NAMESPACE
SA = f"system:serviceaccount:{NAMESPACE}:hmls-controller"
MANAGER = "hmls-test-deploy"
ARGS = ["controller", "--leader-elect", "--namespace", "hmls-system",
        "--metrics-bind-address", "0.0.0.0:8080"]

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: install Debian's `prometheus` package "
                    "(apt-get install -y prometheus); .ci/run installs it in CI")
    return path


@pytest.fixture(scope="module")
def rendered() -> Docs:
    return render("default")


@pytest.fixture(scope="module")
def applied(env: Environment, rendered: Docs) -> Docs:
    """The documented one command: config/default, the CRD included."""
    res = kubectl(env, "hub", "apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-",
                  input=yaml.safe_dump_all(rendered))
    assert "Warning" not in res.stderr, res.stderr
    return rendered


def test_default_renders_the_controller_objects(rendered: Docs) -> None:
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted([
        ("CustomResourceDefinition", "hypermlservices.tensorstack.dev"),
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "hmls-controller"),
        ("ClusterRole", "hmls-controller"),
        ("ClusterRoleBinding", "hmls-controller"),
        ("Role", "hmls-controller"),
        ("RoleBinding", "hmls-controller"),
        ("Deployment", "hmls-controller"),
        ("Service", "hmls-controller-metrics"),
    ])
    for d in rendered:
        if d["kind"] not in ("CustomResourceDefinition", "Namespace", "ClusterRole",
                             "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert one(rendered, kind, "hmls-controller")["subjects"] == [
            {"kind": "ServiceAccount", "name": "hmls-controller", "namespace": NAMESPACE}]


def test_the_sharded_overlay_runs_one_replica_per_shard_allowed_its_leases() -> None:
    docs = render("sharded")
    deployment = one(docs, "Deployment", "hmls-controller")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    shards = int(args[args.index("--shards") + 1])
    assert shards > 1 and deployment["spec"]["replicas"] == shards
    allowed = {name for rule in one(docs, "Role", "hmls-controller")["rules"]
               if "leases" in rule["resources"] and "update" in rule["verbs"]
               for name in rule.get("resourceNames", [])}
    assert {lease_name(k, shards) for k in range(shards)} <= allowed


def test_apply_creates_every_object_on_the_hub(env: Environment, applied: Docs) -> None:
    for d in applied:
        args = ["get", f"{d['kind'].lower()}.{d['apiVersion'].split('/')[0]}"
                if "/" in d["apiVersion"] else d["kind"].lower(), d["metadata"]["name"], "-o", "json",
                "--show-managed-fields"]
        if "namespace" in d["metadata"]:
            args += ["-n", d["metadata"]["namespace"]]
        live = json.loads(kubectl(env, "hub", *args).stdout)
        managers = {m["manager"] for m in live["metadata"].get("managedFields", [])}
        assert MANAGER in managers, (d["kind"], managers)
    # applying again changes nothing (server-side apply is idempotent)
    again = kubectl(env, "hub", "apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-",
                    input=yaml.safe_dump_all(applied)).stdout
    assert all(line.endswith("serverside-applied") for line in again.splitlines()), again
    svc = json.loads(kubectl(env, "hub", "get", "service", "hmls-controller-metrics", "-n",
                             NAMESPACE, "-o", "json").stdout)
    assert svc["spec"]["clusterIP"]  # allocated by the real API server


def can_i(env: Environment, verb: str, resource: str, *scope: str) -> bool:
    res = kubectl(env, "hub", "auth", "can-i", verb, resource, *scope, f"--as={SA}", check=False)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource} {scope}: {res.stdout} {res.stderr}"
    return answer == "yes"


HMLS_RES = "hypermlservices.tensorstack.dev"
ALLOWED = [
    # informers, finalizer patch, status, events (any namespace)
    ("get", HMLS_RES, "-A"), ("list", HMLS_RES, "-A"), ("watch", HMLS_RES, "-A"),
    ("patch", HMLS_RES, "-A"), ("patch", HMLS_RES, "-n", "demo"),
    ("patch", HMLS_RES, "--subresource=status", "-A"),
    ("create", "events", "-n", "demo"),
    # cluster registrations and the leader-election Lease, in hmls-system only
    ("get", "secrets", "-n", NAMESPACE), ("list", "secrets", "-n", NAMESPACE),
    ("watch", "secrets", "-n", NAMESPACE),
    ("create", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("create", "configmaps", "-n", NAMESPACE),
    ("get", "configmaps/hmls-cluster-health", "-n", NAMESPACE),
    ("patch", "configmaps/hmls-cluster-health", "-n", NAMESPACE),
    ("get", "leases.coordination.k8s.io/hmls-controller", "-n", NAMESPACE),
    ("update", "leases.coordination.k8s.io/hmls-controller", "-n", NAMESPACE),
]
DENIED = [
    ("list", "secrets", "-n", "default"), ("get", "secrets", "-A"), ("watch", "secrets", "-A"),
    ("list", "secrets", "-n", "demo"),
    ("create", "secrets", "-n", NAMESPACE), ("update", "secrets", "-n", NAMESPACE),
    ("patch", "secrets", "-n", NAMESPACE), ("delete", "secrets", "-n", NAMESPACE),
    ("delete", HMLS_RES, "-A"), ("delete", HMLS_RES, "-n", "demo"), ("create", HMLS_RES, "-A"),
    ("update", HMLS_RES, "-A"), ("deletecollection", HMLS_RES, "-A"),
    ("delete", HMLS_RES, "--subresource=status", "-A"),
    ("get", "configmaps", "-A"), ("list", "configmaps", "-n", NAMESPACE),
    ("patch", "configmaps/other", "-n", NAMESPACE), ("create", "configmaps", "-n", "demo"),
    ("delete", "events", "-n", "demo"), ("list", "events", "-A"), ("patch", "events", "-n", "demo"),
    ("update", HMLS_RES, "--subresource=status", "-n", "demo"),
    ("update", HMLS_RES, "--subresource=finalizers", "-A"),
    ("list", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("update", "leases.coordination.k8s.io/someone-else", "-n", NAMESPACE),
    ("delete", "leases.coordination.k8s.io/hmls-controller", "-n", NAMESPACE),
    ("create", "leases.coordination.k8s.io", "-n", "default"),
    ("get", "leases.coordination.k8s.io/hmls-controller", "-n", "kube-system"),
    ("create", "pods", "-n", NAMESPACE), ("create", "serviceaccounts/token", "-n", NAMESPACE),
    ("list", "namespaces"), ("get", "nodes"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io", "-n", NAMESPACE),
    ("impersonate", "serviceaccounts", "-A"),
    ("*", "*", "-A"), ("*", "*", "-n", NAMESPACE),
]


@pytest.mark.parametrize("check", ALLOWED, ids=lambda c: " ".join(c))
def test_rbac_allows(env: Environment, applied: Docs, check: tuple[str, ...]) -> None:
    assert can_i(env, *check), f"{SA} should be allowed to {' '.join(check)}"


@pytest.mark.parametrize("check", DENIED, ids=lambda c: " ".join(c))
def test_rbac_denies(env: Environment, applied: Docs, check: tuple[str, ...]) -> None:
    assert not can_i(env, *check), f"{SA} must not be allowed to {' '.join(check)}"


def _rules(env: Environment, namespace: str) -> set[tuple[str, str, str, str]]:
    """Every (group, resource, resourceName, verb) the ServiceAccount holds in namespace,
    from a SelfSubjectRulesReview made as the ServiceAccount."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
              "spec": {"namespace": namespace}}
    out = json.loads(kubectl(env, "hub", "create", "-f", "-", "-o", "json", f"--as={SA}",
                             "--validate=false",
                             input=json.dumps(review)).stdout)
    assert not out["status"].get("incomplete"), out["status"]
    rules = set()
    for r in out["status"]["resourceRules"]:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for name in r.get("resourceNames") or [""]:
                    for verb in r["verbs"]:
                        rules.add((g, res, name, verb))
    # what every authenticated user holds (system:basic-user): reviewing itself
    return {r for r in rules if not r[1].startswith("self")}


CLUSTER_WIDE = {
    *(("tensorstack.dev", "hypermlservices", "", v) for v in ("get", "list", "watch", "patch")),
    ("tensorstack.dev", "hypermlservices/status", "", "patch"),
    ("", "events", "", "create"),
    *(("multicluster.x-k8s.io", "clusterprofiles", "", v) for v in ("list", "watch")),
    *(("apps", "controllerrevisions", "", v) for v in ("list", "create", "patch", "delete")),
}


def test_rbac_is_exactly_what_the_controller_uses(env: Environment, applied: Docs) -> None:
    assert _rules(env, "demo") == CLUSTER_WIDE
    assert _rules(env, NAMESPACE) == CLUSTER_WIDE | {
        ("", "secrets", "", "get"), ("", "secrets", "", "list"), ("", "secrets", "", "watch"),
        ("coordination.k8s.io", "leases", "", "create"),
        ("", "configmaps", "", "create"),
        ("", "configmaps", "hmls-cluster-health", "get"),
        ("", "configmaps", "hmls-cluster-health", "patch"),
        ("coordination.k8s.io", "leases", "hmls-controller", "get"),
        ("coordination.k8s.io", "leases", "hmls-controller", "update"),
    }


def _deployment(docs: Docs) -> dict[str, Any]:
    return copy.deepcopy(one(docs, "Deployment", "hmls-controller"))


def test_deployment_server_side_dry_run_passes_pod_security_restricted(
        env: Environment, applied: Docs) -> None:
    ns = json.loads(kubectl(env, "hub", "get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    dep = _deployment(applied)
    # a create (not a no-op update of the applied object): every admission step runs
    dep["metadata"]["name"] = "hmls-controller-dry-run"
    res = kubectl(env, "hub", "apply", "--server-side", "--dry-run=server",
                  f"--field-manager={MANAGER}", "-f", "-", input=yaml.safe_dump(dep), check=False)
    assert res.returncode == 0, res.stderr
    assert "serverside-applied (server dry run)" in res.stdout, res.stdout
    assert res.stderr == "", res.stderr  # no PodSecurity (or any other) warning
    assert kubectl(env, "hub", "get", "deployment", "hmls-controller-dry-run", "-n", NAMESPACE,
                   check=False).returncode != 0  # dry run: nothing stored
    # the same check is not vacuous: a weakened copy draws PodSecurity warnings
    weak = copy.deepcopy(dep)
    c = weak["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["allowPrivilegeEscalation"] = True
    del c["securityContext"]["capabilities"]
    res = kubectl(env, "hub", "apply", "--server-side", "--dry-run=server",
                  f"--field-manager={MANAGER}", "-f", "-", input=yaml.safe_dump(weak), check=False)
    assert 'would violate PodSecurity "restricted:latest"' in res.stderr, res.stderr
    assert "allowPrivilegeEscalation != false" in res.stderr
    assert 'must set securityContext.capabilities.drop=["ALL"]' in res.stderr


def test_live_deployment_is_locked_down(env: Environment, applied: Docs) -> None:
    dep = json.loads(kubectl(env, "hub", "get", "deployment", "hmls-controller", "-n", NAMESPACE,
                             "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "hmls-controller"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["containers"]
    assert c["image"] == "ghcr.io/tensorstack/hmls:0.1.0"
    assert c["args"] == ARGS
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 8080
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, c["resources"]
    # the only writable path: /tmp (the client writes spoke certificates there)
    tmp = {v["name"]: v for v in pod["volumes"]}
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    assert "emptyDir" in tmp[c["volumeMounts"][0]["name"]]
    # the metrics Service selects these pods and names the port
    svc = json.loads(kubectl(env, "hub", "get", "service", "hmls-controller-metrics", "-n",
                             NAMESPACE, "-o", "json").stdout)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("metrics", 8080, "metrics")]
    assert svc["metadata"]["annotations"] == {"prometheus.io/scrape": "true",
                                              "prometheus.io/port": "8080",
                                              "prometheus.io/path": "/metrics"}


def test_service_monitor_kustomization_targets_the_metrics_service(rendered: Docs) -> None:
    [mon] = render("prometheus")
    assert (mon["apiVersion"], mon["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert mon["metadata"]["namespace"] == NAMESPACE
    svc = one(rendered, "Service", "hmls-controller-metrics")
    assert mon["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in mon["spec"]["endpoints"]] == [("metrics", "/metrics")]
    assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}


def test_promtool_check_rules() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(CONFIG / "prometheus" / "rules.yaml")],
                         capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 10 rules found" in res.stdout, res.stdout


def test_promtool_rule_unit_tests() -> None:
    """config/prometheus/rules_test.yaml: each alert fires (and only) as its annotation says."""
    res = subprocess.run([promtool(), "test", "rules", "rules_test.yaml"],
                         cwd=CONFIG / "prometheus", capture_output=True, text=True, check=False,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout, res.stdout


# ----- the controller with the ServiceAccount's own credentials ---------------------------

def _service_account_kubeconfig(env: Environment, path: Path) -> Path:
    token, server, ca = service_account_credentials(env, NAMESPACE, "hmls-controller")
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "hub", "cluster": {"server": server,
                                                 "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "hub", "user": "sa"}}],
    }))
    return path


async def test_controller_works_with_only_its_service_account(
        env: Environment, applied: Docs, clients: dict[str, ClusterClient],
        controller: Controller, tmp_path: Path) -> None:
    """The session's admin-credentialed controller is stopped; a controller holding only the
    ServiceAccount's token reads the cluster Secrets, applies, writes status, records Events
    and finalizes, and is never refused by the hub."""
    ns = "t-deploy-rbac"
    namespace_everywhere(env, ns)
    kubeconfig = _service_account_kubeconfig(env, tmp_path / "sa.kubeconfig")
    # the later --kubeconfig wins over the admin one that Controller passes first
    own = Controller(env, *FAST_PROBES, "--kubeconfig", str(kubeconfig), "--namespace",
                     NAMESPACE, "--watch-namespaces", ns, "--leader-elect", "--lease-seconds", "3")
    controller.stop()
    try:
        own.start()
        try:
            await _drive(env, clients["hub"], ns, own)
        finally:
            assert own.stop() == 0
    finally:
        controller.start()
    text = own.log.read_text()
    assert "forbidden" not in text.lower() and " 403" not in text, text[-3000:]
    assert "holding Lease hmls-system/hmls-controller " in text, text
    assert "released Lease hmls-system/hmls-controller" in text, text
    assert _lease(env)["spec"].get("holderIdentity", "") == ""  # released on SIGTERM (an update)
    kubectl(env, "hub", "delete", "leases.coordination.k8s.io", "hmls-controller", "-n", NAMESPACE)


def _readyz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return str(r.read().decode())
    except OSError as exc:
        return repr(exc)


def _lease(env: Environment) -> dict[str, Any]:
    out = kubectl(env, "hub", "get", "leases.coordination.k8s.io", "hmls-controller", "-n",
                  NAMESPACE, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


async def _drive(env: Environment, hub: ClusterClient, ns: str, own: Controller) -> None:
    # leader election: the Lease is created (or taken over) and then renewed (get + update)
    async def leading() -> dict[str, Any] | None:
        lease = _lease(env)
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        return lease if holder.startswith(socket.gethostname()) and _readyz(own.port) == "ok" \
            else None
    first = await eventually(leading, timeout=40, what="the ServiceAccount's controller leads")

    async def renewed() -> bool:
        return bool(_lease(env)["spec"]["renewTime"] != first["spec"]["renewTime"])
    await eventually(renewed, timeout=10, what="Lease renewed")
    # the cluster Secrets were read: the spokes are registered
    assert own.metrics().get('hmls_clusters{state="ready"}', 0) >= 2, own.metrics()
    # finalizer patch, applies with the spokes' own credentials, status subresource
    create(env, hmls(ns, "good", (["spoke1", "spoke2"], [configmap("cfg", a="1")])))
    good = await wait_condition(hub, ns, "good", "FullyApplied")
    assert FINALIZER in good["metadata"]["finalizers"]
    # an Event (ApplyFailed) in the HyperMLService's namespace
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    create(env, hmls(ns, "bad", (["spoke1"], [widget])))
    bad = await wait_condition(hub, ns, "bad", "FullyApplied", "False")
    assert "is not served by cluster spoke1" in condition(bad, "FullyApplied")["message"]

    async def event_recorded() -> bool:
        out = kubectl(env, "hub", "get", "events", "-n", ns, "-o", "json").stdout
        return any(e["reason"] == "ApplyFailed" and e["involvedObject"]["name"] == "bad"
                   for e in json.loads(out)["items"])
    await eventually(event_recorded, what="ApplyFailed event")
    # deletion: cleanup on the spokes, then the finalizer comes off
    kubectl(env, "hub", "delete", "hmls", "-n", ns, "good", "bad", "--wait=false")

    async def gone() -> bool:
        return await get_hmls(hub, ns, "good") is None and await get_hmls(hub, ns, "bad") is None
    await eventually(gone, what="both HyperMLServices finalized")
    metrics = own.metrics()
    assert metrics["hmls_status_writes_total"] >= 2, metrics
    # the only failures allowed are the benign race of a reconcile queued just before the
    # finalizer came off (404), never a refusal by the hub
    failures = [line for line in own.log.read_text().splitlines() if "reconcile failed" in line]
    assert all(line.endswith("not found") for line in failures), failures
