"""Metric analysis as a rollout gate, against real API servers and a real Prometheus: the
session's controller queries the session's Prometheus (``--prometheus-url``), which scrapes
the MLService simulator's request counters (``mlservice_requests_total``); the simulator's
error-ratio knob, carried by a revision's manifest, plays a model that is Ready but answers
with errors.  And kstatus' own rules (cli-utils) reading the HyperMLService in each state."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.simulator import ERROR_RATIO_KNOB, MLSERVICE

from hmls.kube.client import Obj
from tests.helpers import (
    Clients,
    condition,
    create,
    delete,
    described_events,
    get_hmls,
    hmls,
    hmls_cli,
    hub,
    hub_namespace,
    kstatus,
    kubectl,
    mlservice,
    namespace_everywhere,
    phase,
    progressive,
    replace_spec,
    revised,
    rolled_out,
    wait_condition,
)

ERROR_RATIO = ('sum(rate(mlservice_requests_total{cluster="${cluster.name}",'
               'namespace="${namespace}",mlservice="${name}",code="500"}[4s])) / '
               'sum(rate(mlservice_requests_total{cluster="${cluster.name}",'
               'namespace="${namespace}",mlservice="${name}"}[4s]))')


def gated(ns: str, query: str = ERROR_RATIO, **metric: Any) -> Obj:
    obj = progressive(ns, soakSeconds=6, progressDeadlineSeconds=60, order=["spoke1", "spoke2"])
    obj["spec"]["rollout"]["analysis"] = {"intervalSeconds": 2, "metrics": [
        {"name": "error-ratio", "query": query, "thresholdRange": {"max": 0.05}, **metric}]}
    return obj


def steps(obj: Obj) -> dict[str, dict[str, Any]]:
    return {s["cluster"]: s for s in obj["status"]["rollout"]["clusters"]}


async def mlservice_annotations(clients: Clients, spoke: str, ns: str) -> dict[str, str]:
    got = await clients[spoke].get(MLSERVICE, ns, "svc")
    assert got is not None
    return dict(got["metadata"].get("annotations") or {})


async def test_a_revision_that_breaks_its_error_ratio_halts_in_its_soak_and_rolls_back(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "t-analysis-halt"
    hub_namespace(env, ns)
    obj = gated(ns)
    try:
        create(env, obj)
        first = await rolled_out(clients, ns, 1)
        tally = steps(first)["spoke1"]["analysis"][0]
        assert tally["metric"] == "error-ratio" and tally["result"] == "Successful"
        assert tally["successes"] >= 1 and tally["value"] == 0

        replace_spec(env, revised(obj, knobs={ERROR_RATIO_KNOB: "0.5"}))  # the bad model
        soak = steps(await phase(clients, ns, "spoke1", "Soaking"))["spoke1"]["since"]
        soaking = time.monotonic()
        async def good_model_back() -> bool:
            return ERROR_RATIO_KNOB not in await mlservice_annotations(clients, "spoke1", ns)
        await eventually(good_model_back, timeout=30, what="spoke1 back at revision 1")
        to_rollback = time.monotonic() - soaking
        # the failed step turned straight into its rollback (in the same reconcile)
        back = await phase(clients, ns, "spoke1", "RolledBack", timeout=30)
        to_rolled_back = time.monotonic() - soaking
        cond = condition(back, "RolledOut")
        assert (cond["status"], cond["reason"]) == ("False", "Halted"), cond
        assert cond["message"].startswith("revision 2 halted: spoke1 failed its analysis "
                                          "(metric error-ratio failed 1 measurement "
                                          "(failureLimit 0): "), cond
        stalled = condition(back, "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "RolloutHalted")
        failed = steps(back)["spoke1"]["analysis"][0]  # the last analysis, kept
        assert failed["result"] == "Failed" and failed["value"] > 0.05, failed
        assert steps(back)["spoke1"]["revision"] == 1
        assert ERROR_RATIO_KNOB not in await mlservice_annotations(clients, "spoke1", ns)
        # spoke2 never got revision 2
        assert steps(back)["spoke2"] == {**steps(back)["spoke2"], "revision": 1,
                                         "phase": "Pending"}
        assert ERROR_RATIO_KNOB not in await mlservice_annotations(clients, "spoke2", ns)
        reasons = [e["reason"] for e in described_events(env, ns, "svc")]
        assert {"AnalysisFailed", "RolloutStepFailed", "RolloutHalted"} <= set(reasons)
        shown = hmls_cli("rollout", "status", f"{ns}/svc", *hub(env)).stdout
        assert re.search(r"\nspoke1 +1 +RolledBack .* error-ratio=0\.\d+ Failed \(\d+ ok, 1 "
                         r"failed\)", shown), shown
        status, message = kstatus(back)
        assert status == "Failed" and "halted" in message, (status, message)
        print(f"\nanalysis: spoke1 soaking since {soak}, failed measurement (and halt) at "
              f"{failed['time']}; after the soak was seen: revision 1 back on spoke1 "
              f"{to_rollback:.1f}s, RolledBack (its own soak done) {to_rolled_back:.1f}s")

        replace_spec(env, revised(obj, replicas=3))  # the next good revision
        done = await rolled_out(clients, ns, 3)
        assert {c: (s["revision"], s["phase"]) for c, s in steps(done).items()} == {
            "spoke1": (3, "Done"), "spoke2": (3, "Done")}
        assert all(s["analysis"][0]["successes"] >= 1 for s in steps(done).values())
        assert "Stalled" not in {c["type"] for c in done["status"]["conditions"]}
        metrics = controller.metrics()
        assert metrics['hmls_rollout_analysis_total{result="Failed"}'] >= 1
        assert metrics['hmls_rollout_analysis_total{result="Successful"}'] >= 3
        count = metrics["hmls_rollout_analysis_query_seconds_count"]
        print(f"analysis queries so far: {count:.0f}, mean "
              f"{metrics['hmls_rollout_analysis_query_seconds_sum'] / count * 1000:.1f} ms")
    finally:
        delete(env, ns)


async def test_an_inconclusive_query_waits_and_says_why(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-analysis-nodata"
    hub_namespace(env, ns)
    obj = gated(ns, 'sum(mlservice_requests_total{cluster="${cluster.name}",namespace="none"})',
                inconclusiveLimit=2)
    obj["spec"].pop("traffic")
    try:
        create(env, obj)

        async def starved() -> Obj | None:
            got = await get_hmls(clients["hub"], ns, "svc")
            return got if condition(got, "RolledOut").get("reason") == \
                "AnalysisInconclusive" else None
        waiting: Obj = await eventually(starved, timeout=30, what="AnalysisInconclusive")
        message = condition(waiting, "RolledOut")["message"]
        assert message.startswith("rolling out revision 1, waiting for metric data: spoke1: "
                                  "metric error-ratio inconclusive "), message
        assert "the query returned no sample" in message
        reconciling = condition(waiting, "Reconciling")
        assert (reconciling["status"], reconciling["reason"]) == ("True", "RolloutInProgress")
        assert kstatus(waiting)[0] == "InProgress"
        assert "halted" not in waiting["status"]["rollout"]
        assert any(e["reason"] == "AnalysisInconclusive"
                   for e in described_events(env, ns, "svc"))
    finally:
        delete(env, ns)


def test_a_bad_analysis_section_is_refused_at_admission_and_by_diff(env: Environment) -> None:
    ns = "t-analysis-admission"
    hub_namespace(env, ns)
    obj = gated(ns, 'x{c="${cluster.nme}"}')
    obj["spec"]["rollout"]["analysis"]["metrics"][0]["thresholdRange"] = {"min": 2, "max": 1}
    manifest = yaml.safe_dump(obj)
    res = kubectl(env, "hub", "create", "-f", "-", input=manifest, check=False)
    assert res.returncode != 0
    assert "unknown placeholder: use ${cluster.name}" in res.stderr, res.stderr
    assert "thresholdRange min must not be above max" in res.stderr, res.stderr
    diff = hmls_cli("diff", "-f", "-", *hub(env), input=manifest, check=False)
    assert diff.returncode == 2, diff
    assert "unknown placeholder ${cluster.nme}" in diff.stderr, diff.stderr
    assert "thresholdRange min 2.0 is above max 1.0" in diff.stderr, diff.stderr


async def test_kstatus_reads_current_in_progress_and_failed(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """kstatus' own rules (cli-utils status.Compute) on `kubectl get -o json` of real CRs."""
    ns = "t-kstatus"
    namespace_everywhere(env, ns)

    def read(name: str) -> tuple[str, str]:
        got = kubectl(env, "hub", "get", "hmls", "-n", ns, name, "-o", "json").stdout
        return kstatus(json.loads(got))

    good = hmls(ns, "good", (["spoke1"], [mlservice("good")]))
    broken = hmls(ns, "broken", (["spoke1"], [{"apiVersion": "example.com/v1",
                                              "kind": "Widget", "metadata": {"name": "w"}}]))
    slow = hmls(ns, "slow", (["spoke1"], [mlservice("slow")]))
    slow["spec"]["workloads"][0]["manifests"][0]["metadata"]["annotations"] = {
        "simulator.hmls.tensorstack.dev/ready": "false"}
    try:
        for obj in (good, broken, slow):
            create(env, obj)
        await wait_condition(clients["hub"], ns, "good", "Ready")
        assert read("good") == ("Current", "Resource is Ready")
        await wait_condition(clients["hub"], ns, "broken", "Stalled")
        status, message = read("broken")
        assert status == "Failed" and "kind Widget" in message, message
        await wait_condition(clients["hub"], ns, "slow", "Reconciling")
        status, message = read("slow")
        assert status == "InProgress" and "not Ready yet" in message, message
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "--all", "--timeout=30s", check=False)
