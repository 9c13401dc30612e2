"""The Helm chart (charts/hmls) with a real helm (v4, built from the Go module proxy): lint,
template, and install, upgrade and uninstall on the local hub.

One source of truth: with its default values the chart renders exactly the objects of
``kubectl kustomize config/default`` (the Namespace aside, which a Helm release does not own),
with ``shards`` those of config/sharded, with the Prometheus Operator's objects enabled those
of config/prometheus; only the labels Helm adds differ. The CRD and the rules are the same
files (symbolic links into manifests/hub and config/prometheus).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hmls_devenv import binaries
from hmls_devenv.environment import Environment

import hmls
from hmls.cli import build_parser
from tests.helpers import CONFIG, CONFIG_NAMESPACE, REPO, Docs, kubectl, one, render

CHART = REPO / "charts" / "hmls"
RELEASE = "hmls"
# what Helm's labels add to kustomize's (config/default labels every object part-of and
# managed-by; the chart labels its templates, Helm never labels crds/)
RELEASE_LABELS = ("app.kubernetes.io/part-of", "app.kubernetes.io/managed-by",
                  "app.kubernetes.io/instance", "helm.sh/chart")


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's cache, configuration and data in a scratch folder (nothing under ~)."""
    home = tmp_path_factory.mktemp("helm")
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}


def helm(helm_env: dict[str, str], *args: str, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(binaries.ensure(binaries.HELM)), *args], env=helm_env,
                         capture_output=True, text=True, check=False, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {res.stderr}")
    return res


def template(helm_env: dict[str, str], *values: str) -> Docs:
    out = helm(helm_env, "template", RELEASE, str(CHART), "--namespace", CONFIG_NAMESPACE,
               "--include-crds", *values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def normalized(docs: Docs) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue
        meta = doc["metadata"]
        labels = {k: v for k, v in (meta.pop("labels", None) or {}).items()
                  if k not in RELEASE_LABELS}
        if labels:
            meta["labels"] = labels
        out[(doc["kind"], meta["name"])] = doc
    return out


def test_helm_lint_strict(helm_env: dict[str, str]) -> None:
    res = helm(helm_env, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in res.stdout, res.stdout


def test_chart_version_is_the_controllers() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == hmls.__version__


@pytest.mark.parametrize(("values", "config"), [
    ((), "default"),
    (("--set", "shards=3", "--set", "replicas=3"), "sharded"),
], ids=["default", "sharded"])
def test_the_chart_renders_what_config_renders(helm_env: dict[str, str], values: tuple[str, ...],
                                               config: str) -> None:
    chart, kustomized = normalized(template(helm_env, *values)), normalized(render(config))
    assert sorted(chart) == sorted(kustomized)
    for key, doc in kustomized.items():
        assert chart[key] == doc, key


def test_the_prometheus_operator_objects_are_config_prometheus(helm_env: dict[str, str]) -> None:
    docs = template(helm_env, "--set", "serviceMonitor.enabled=true",
                    "--set", "prometheusRule.enabled=true")
    chart = normalized(docs)
    assert chart[("ServiceMonitor", "hmls-controller")] == \
        normalized(render("prometheus"))[("ServiceMonitor", "hmls-controller")]
    rule = one(docs, "PrometheusRule", "hmls-controller")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load((CONFIG / "prometheus" / "rules.yaml").read_text())
    assert not {d["kind"] for d in template(helm_env)} & {"ServiceMonitor", "PrometheusRule"}


def test_values_become_controller_flags_the_controller_accepts(helm_env: dict[str, str]) -> None:
    docs = template(helm_env, "--set", "logFormat=json", "--set", "flags.workers=8",
                    "--set", "flags.prometheus-url=http://prometheus.monitoring:9090",
                    "--set", "flags.allow-exec-kubeconfig=true",
                    "--set", "flags.allow-file-kubeconfig=false",
                    "--set", "image.tag=0.2.0", "--set", "metricsPort=9000")
    [container] = one(docs, "Deployment", "hmls-controller")["spec"]["template"]["spec"][
        "containers"]
    assert container["image"] == "ghcr.io/tensorstack/hmls:0.2.0"
    assert container["ports"][0]["containerPort"] == 9000
    args = build_parser().parse_args(container["args"])  # the controller's own parser
    assert (args.log_format, args.workers, args.prometheus_url) == (
        "json", 8, "http://prometheus.monitoring:9090")
    assert (args.allow_exec_kubeconfig, args.allow_file_kubeconfig) == (True, False)
    assert (args.leader_elect, args.namespace, args.metrics_bind_address, args.shards) == (
        True, CONFIG_NAMESPACE, "0.0.0.0:9000", 1)


@pytest.mark.parametrize(("values", "message"), [
    (("--set", "shards=0"), "at '/shards': minimum: got 0, want 1"),
    (("--set", "replica=3"), "additional properties 'replica' not allowed"),
    (("--set", "flags.shards=3"), "flags.shards: the chart sets --shards itself"),
    (("--set", "flags.--workers=3"), "'--workers' does not match pattern '^[a-z][a-z0-9-]*$'"),
    (("--set", "logFormat=xml"), "at '/logFormat': value must be one of"),
], ids=["shards", "typo", "own-flag", "dashes", "log-format"])
def test_bad_values_are_refused_with_a_clear_message(helm_env: dict[str, str],
                                                     values: tuple[str, ...], message: str) -> None:
    res = helm(helm_env, "template", RELEASE, str(CHART), *values, check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr


# ----- a release on real API servers ---------------------------------------------------

def _live(env: Environment, cluster: str, kind: str, name: str, namespace: str = CONFIG_NAMESPACE
          ) -> dict[str, Any] | None:
    res = kubectl(env, cluster, "get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def _release(helm_env: dict[str, str], kubeconfig: Path, namespace: str) -> dict[str, Any]:
    out = helm(helm_env, "status", RELEASE, "--kubeconfig", str(kubeconfig), "-n", namespace,
               "-o", "json").stdout
    return dict(json.loads(out))


def test_install_upgrade_uninstall_on_the_hub(env: Environment,
                                              helm_env: dict[str, str]) -> None:
    hub = env.kubeconfig("hub")
    kubectl(env, "hub", "create", "namespace", CONFIG_NAMESPACE, check=False)
    # the same objects applied with kubectl (test_deploy) would not be Helm's to take over
    applied = [d for d in render("default")
               if d["kind"] not in ("CustomResourceDefinition", "Namespace")]
    kubectl(env, "hub", "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            input=yaml.safe_dump_all(applied))
    res = helm(helm_env, "install", RELEASE, str(CHART), "--kubeconfig", str(hub),
               "-n", CONFIG_NAMESPACE)
    assert "STATUS: deployed" in res.stdout, res.stdout
    assert "hmls cluster join NAME" in res.stdout  # NOTES.txt
    release = _release(helm_env, hub, CONFIG_NAMESPACE)
    assert (release["version"], release["info"]["status"]) == (1, "deployed")
    for kind, name in normalized(template(helm_env)):
        if kind == "CustomResourceDefinition":
            continue
        live = _live(env, "hub", kind, name)
        assert live is not None, (kind, name)
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    deployment = _live(env, "hub", "deployment", "hmls-controller")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    # an upgrade that changes values: replicas and a flag
    res = helm(helm_env, "upgrade", RELEASE, str(CHART), "--kubeconfig", str(hub),
               "-n", CONFIG_NAMESPACE, "--set", "replicas=3", "--set", "flags.workers=8")
    assert "STATUS: deployed" in res.stdout and "REVISION: 2" in res.stdout, res.stdout
    deployment = _live(env, "hub", "deployment", "hmls-controller")
    assert deployment is not None and deployment["spec"]["replicas"] == 3
    assert "--workers=8" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    history = json.loads(helm(helm_env, "history", RELEASE, "--kubeconfig", str(hub),
                              "-n", CONFIG_NAMESPACE, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    # uninstall: the release's objects go, the CRD (and so every HyperMLService) stays
    res = helm(helm_env, "uninstall", RELEASE, "--kubeconfig", str(hub), "-n", CONFIG_NAMESPACE)
    assert f'release "{RELEASE}" uninstalled' in res.stdout, res.stdout
    for kind, name in (("deployment", "hmls-controller"), ("serviceaccount", "hmls-controller"),
                       ("role", "hmls-controller"), ("service", "hmls-controller-metrics")):
        assert _live(env, "hub", kind, name) is None, (kind, name)
    assert kubectl(env, "hub", "get", "clusterrole", "hmls-controller",
                   check=False).returncode != 0
    assert kubectl(env, "hub", "get", "crd", "hypermlservices.tensorstack.dev",
                   check=False).returncode == 0


def test_install_creates_the_crd_and_uninstall_leaves_it(env: Environment,
                                                         helm_env: dict[str, str]) -> None:
    """On an API server without the CRD (the local ingress cluster), the chart's crds/ make it;
    after uninstall the CRD and a HyperMLService stay."""
    cluster, namespace = "ingress", "hmls-chart"
    kubeconfig = env.kubeconfig(cluster)
    crd = "hypermlservices.tensorstack.dev"
    assert kubectl(env, cluster, "get", "crd", crd, check=False).returncode != 0
    helm(helm_env, "install", RELEASE, str(CHART), "--kubeconfig", str(kubeconfig),
         "-n", namespace, "--create-namespace")
    kubectl(env, cluster, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    kubectl(env, cluster, "create", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "tensorstack.dev/v1beta1", "kind": "HyperMLService",
         "metadata": {"name": "kept", "namespace": namespace},
         "spec": {"workloads": [{"clusters": ["spoke1"], "manifests": [
             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]}]}}))
    helm(helm_env, "uninstall", RELEASE, "--kubeconfig", str(kubeconfig), "-n", namespace)
    assert _live(env, cluster, "deployment", "hmls-controller", namespace) is None
    assert _live(env, cluster, "hmls", "kept", namespace) is not None
