"""A real Prometheus (Debian's /usr/bin/prometheus) scraping the session's controller every
second with config/prometheus/rules.yaml loaded: the hmls_* series arrive with their labels,
they move when the controller works, and the recording and alerting rules evaluate against
them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually

from hmls.domain.models import CLUSTER_LABEL
from hmls.kube.client import ClusterClient
from tests.helpers import (
    Prometheus,
    configmap,
    create,
    get_hmls,
    hmls,
    kubectl,
    namespace_everywhere,
    replace_spec,
    wait_condition,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "rules.yaml"
JOB = "hmls-controller"


@pytest.fixture(scope="module")
def prometheus(controller: Controller, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    with Prometheus(tmp_path_factory.mktemp("prometheus"), {JOB: controller.metrics_url},
                    rules=[RULES]) as prom:
        yield prom


def _labels(prom: Prometheus, metric: str) -> list[dict[str, str]]:
    series: list[dict[str, str]] = prom.api("series", **{"match[]": metric})
    return series


async def test_prometheus_scrapes_the_controller(prometheus: Prometheus,
                                                 controller: Controller) -> None:
    async def up() -> list[dict[str, Any]] | None:
        targets = prometheus.api("targets")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None
    [target] = await eventually(up, what="the controller target is up")
    assert target["labels"] == {"job": JOB, "instance": f"127.0.0.1:{controller.port}"}
    assert target["scrapeUrl"] == f"http://127.0.0.1:{controller.port}/metrics"
    assert prometheus.value(f'up{{job="{JOB}"}}') == 1


async def test_gauges_arrive_with_their_labels(prometheus: Prometheus,
                                               controller: Controller) -> None:
    async def reachable() -> float | None:
        return prometheus.value('hmls_cluster_reachable{cluster="spoke1"}')
    assert await eventually(reachable, what="hmls_cluster_reachable{cluster=spoke1}") == 1
    assert prometheus.value('hmls_cluster_reachable{cluster="spoke2"}') == 1
    assert prometheus.value(f'hmls_leader{{job="{JOB}"}}') == 1  # no --leader-elect: always leader
    for cluster in ("spoke1", "spoke2"):
        [s] = _labels(prometheus, f'hmls_cluster_reachable{{cluster="{cluster}"}}')
        assert s == {"__name__": "hmls_cluster_reachable", "cluster": cluster, "job": JOB,
                     "instance": f"127.0.0.1:{controller.port}"}
    assert {s["state"] for s in _labels(prometheus, "hmls_clusters")} == {"ready", "refused"}
    ready = prometheus.value('hmls_clusters{state="ready"}')
    assert ready is not None and ready >= 2
    assert prometheus.value("hmls_queue_depth") is not None
    assert prometheus.value("hmls_status_writes_total") is not None
    assert prometheus.value("hmls_reconcile_duration_seconds_count") is not None
    assert {s["le"] for s in _labels(prometheus, "hmls_reconcile_duration_seconds_bucket")} >= {
        "0.005", "0.1", "1.0", "30.0", "+Inf"}


def _scraped_equals_exposed(prometheus: Prometheus, controller: Controller, key: str,
                            expr: str) -> bool:
    exposed = controller.metrics().get(key)
    return exposed is not None and prometheus.value(expr) == exposed


def _present(prometheus: Prometheus, expr: str) -> float:
    value = prometheus.value(expr)
    assert value is not None, f"Prometheus has no {expr}"
    return value


async def test_counters_move_when_the_controller_works(
        env: Environment, clients: dict[str, ClusterClient], prometheus: Prometheus,
        controller: Controller) -> None:
    applied = {c: f'hmls_apply_total{{cluster="{c}",result="applied"}}' for c in ("spoke1", "spoke2")}
    success = 'hmls_reconcile_total{result="success"}'
    writes = "hmls_status_writes_total"
    counters = [*applied.values(), success, writes]

    async def settled() -> bool:  # Prometheus has the controller's current values
        return all(_scraped_equals_exposed(prometheus, controller, e, e) for e in counters)

    # first work: a labelled series is born with its first value (no earlier sample)
    ns = "t-prometheus"
    namespace_everywhere(env, ns)
    obj = hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("cm0", i="0")]))
    create(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    await eventually(settled, what="Prometheus caught up with the controller")
    before = {e: _present(prometheus, e) for e in counters}

    # more work: three more manifests on each spoke
    obj["spec"]["workloads"][0]["manifests"] += [configmap(f"cm{i}", i=str(i)) for i in (1, 2, 3)]
    replace_spec(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    await eventually(settled, what="Prometheus scraped the new values")
    after = {e: _present(prometheus, e) for e in counters}
    for e in applied.values():
        assert after[e] - before[e] >= 3, (e, before[e], after[e])
    assert after[success] > before[success]
    assert after[writes] > before[writes]

    # PromQL over the scraped history sees the increase
    for e in [applied["spoke1"], success]:
        async def increased(e: str = e) -> float | None:
            v = prometheus.value(f"increase({e}[1m])")
            return v if v is not None and v > 0 else None
        await eventually(increased, what=f"increase({e}[1m]) > 0")

    # the label sets
    assert {s["result"] for s in _labels(prometheus, "hmls_reconcile_total")} >= {"success"}
    assert {(s["cluster"], s["result"]) for s in _labels(prometheus, "hmls_apply_total")} >= {
        ("spoke1", "applied"), ("spoke2", "applied")}
    for s in _labels(prometheus, "hmls_apply_total"):
        assert set(s) == {"__name__", "cluster", "result", "job", "instance"}
        # README: applied, unchanged, conflict, failed; the code also counts "refused" (a
        # manifest the cluster's access annotations do not allow)
        assert s["result"] in {"applied", "unchanged", "conflict", "failed", "refused"}
    for s in _labels(prometheus, "hmls_reconcile_total"):
        assert set(s) == {"__name__", "result", "job", "instance"}
        assert s["result"] in {"success", "requeue", "conflict", "error"}

    # the recording rules see the work
    async def recorded() -> float | None:
        v = prometheus.value(f'hmls:reconcile_total:rate5m{{result="success",job="{JOB}"}}')
        return v if v is not None and v > 0 else None
    await eventually(recorded, what="hmls:reconcile_total:rate5m > 0")

    async def p99() -> float | None:
        v = prometheus.value("hmls:reconcile_duration_seconds:p99_5m")
        return v if v is not None and not math.isnan(v) else None
    assert 0 < await eventually(p99, what="hmls:reconcile_duration_seconds:p99_5m") <= 30

    kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--wait=false")

    async def gone() -> bool:
        return await get_hmls(clients["hub"], ns, "svc") is None
    await eventually(gone, what="svc deleted")


async def test_rule_groups_load_and_evaluate(prometheus: Prometheus) -> None:
    expected = yaml.safe_load(RULES.read_text())["groups"]

    async def evaluated() -> list[dict[str, Any]] | None:
        groups: list[dict[str, Any]] = prometheus.api("rules")["groups"]
        ok = groups and all(r["health"] == "ok" for g in groups for r in g["rules"])
        return groups if ok else None
    groups = await eventually(evaluated, what="every rule evaluated without error")
    # the API lists groups sorted by name; rules keep the file's order
    assert {g["name"]: [r["name"] for r in g["rules"]] for g in groups} == {
        g["name"]: [r.get("record") or r["alert"] for r in g["rules"]] for g in expected}
    assert {g["name"] for g in groups} == {"hmls.rules", "hmls.alerts"}
    for g in groups:
        assert g["file"] == str(RULES)
        assert g["interval"] == 1
        for r in g["rules"]:
            assert not r.get("lastError"), r
    by_name = {g["name"]: g for g in groups}
    assert all(r["type"] == "recording" for r in by_name["hmls.rules"]["rules"])
    alerts = {r["name"]: r for r in by_name["hmls.alerts"]["rules"]}
    assert set(alerts) == {"HmlsClusterUnreachable", "HmlsReconcileErrors",
                           "HmlsNotFullyAppliedForLong", "HmlsNoLeader", "HmlsShardWithoutReplica",
                           "HmlsClustersRefused", "HmlsControllerMetricsAbsent"}
    assert all(a["type"] == "alerting" for a in alerts.values())
    # the controller is scraped, so the absence alert stays quiet
    assert alerts["HmlsControllerMetricsAbsent"]["state"] == "inactive"


async def test_refused_registration_makes_its_alert_pending(
        env: Environment, prometheus: Prometheus, controller: Controller) -> None:
    """A cluster Secret the controller refuses shows up as hmls_clusters{state="refused"} in
    Prometheus and HmlsClustersRefused goes pending (it fires after 5 minutes)."""
    before = controller.metrics()['hmls_clusters{state="refused"}']
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "cluster-prom-refused", "namespace": "hmls-system",
                           "labels": {CLUSTER_LABEL: "prom-refused"}},
              "data": {"not-a-kubeconfig": "eA=="}}
    kubectl(env, "hub", "apply", "-f", "-", input=yaml.safe_dump(secret))
    try:
        async def refused() -> float | None:
            v = prometheus.value('hmls_clusters{state="refused"}')
            return v if v is not None and v == before + 1 else None
        await eventually(refused, what="the refused registration in Prometheus")

        async def pending() -> list[dict[str, Any]] | None:
            alerts = [a for a in prometheus.api("alerts")["alerts"]
                      if a["labels"]["alertname"] == "HmlsClustersRefused"]
            # value and annotations are those of the latest rule evaluation
            return alerts if alerts and alerts[0]["state"] in ("pending", "firing") and \
                float(alerts[0]["value"]) == before + 1 else None
        [alert] = await eventually(pending, what="HmlsClustersRefused pending with the new count")
        assert alert["labels"] == {"alertname": "HmlsClustersRefused", "state": "refused",
                                   "severity": "warning", "job": JOB}
        assert alert["annotations"]["summary"] == (
            f"{before + 1:g} cluster registration(s) refused by hmls")
    finally:
        kubectl(env, "hub", "delete", "secret", "-n", "hmls-system", "cluster-prom-refused")

    async def restored() -> bool:
        return controller.metrics()['hmls_clusters{state="refused"}'] == before
    await eventually(restored, what="the refused registration removed")
