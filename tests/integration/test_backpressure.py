"""Each spoke is protected, and a spoke that pushes back is obeyed: a real API server's API
Priority and Fairness rejects hmls's writes beyond a few at a time with 429 Too Many
Requests; hmls slows down for its Retry-After and every item is applied, none failed, and the
cluster never counts as unreachable."""

from __future__ import annotations

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller

from hmls.kube.client import Obj
from tests.helpers import (
    Clients,
    configmap,
    create,
    hmls,
    hmls_cli,
    hub,
    items,
    kubectl,
    namespace_everywhere,
    wait_condition,
)

FLOWCONTROL = "flowcontrol.apiserver.k8s.io/v1"


def apf(name: str, ns: str) -> list[Obj]:
    """A priority level of ~3 seats that rejects (no queue, no borrowing), and the flow
    schema that puts the patches of ConfigMaps in ``ns`` by hmls's identity ``name`` there."""
    return [
        {"apiVersion": FLOWCONTROL, "kind": "PriorityLevelConfiguration",
         "metadata": {"name": "hmls-test-throttle"},
         "spec": {"type": "Limited", "limited": {
             "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
             "limitResponse": {"type": "Reject"}}}},
        {"apiVersion": FLOWCONTROL, "kind": "FlowSchema",
         "metadata": {"name": "hmls-test-throttle"},
         "spec": {"priorityLevelConfiguration": {"name": "hmls-test-throttle"},
                  "matchingPrecedence": 100, "distinguisherMethod": {"type": "ByUser"},
                  "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                      "name": f"hmls-{name}", "namespace": "hmls-system"}}],
                      "resourceRules": [{"verbs": ["patch"], "apiGroups": [""],
                                         "resources": ["configmaps"], "namespaces": [ns]}]}]}},
    ]


async def test_a_spoke_that_answers_429_slows_hmls_down_and_nothing_fails(
        env: Environment, clients: Clients, controller: Controller) -> None:
    name, ns = "throttled", "t-throttled"
    # spoke2 once more, under hmls's own minted identity (not system:masters, which APF
    # exempts)
    joined = hmls_cli("cluster", "join", name, *hub(env), "--cluster-kubeconfig",
                      str(env.kubeconfig("spoke2")), "--trust-hub-namespaces", check=False)
    assert joined.returncode == 0, joined.stderr
    namespace_everywhere(env, ns)
    limits = yaml.safe_dump_all(apf(name, ns))
    kubectl(env, "spoke2", "apply", "-f", "-", input=limits)
    try:
        before = controller.metrics().get(f'hmls_cluster_throttled_total{{cluster="{name}"}}', 0)
        create(env, hmls(ns, "many", ([name], [configmap(f"c{i}", v=str(i))
                                               for i in range(60)])))
        done = await wait_condition(clients["hub"], ns, "many", "FullyApplied", timeout=90)
        assert all(i["applied"] for i in items(done)), [
            i["appliedMessage"] for i in items(done) if not i["applied"]]
        metrics = controller.metrics()
        throttled = metrics.get(f'hmls_cluster_throttled_total{{cluster="{name}"}}', 0)
        assert throttled > before, "the spoke never answered 429: the test proves nothing"
        assert metrics[f'hmls_cluster_reachable{{cluster="{name}"}}'] == 1
        print(f"\n429 answers obeyed: {throttled - before:.0f}")
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "many", "--timeout=60s", check=False)
        kubectl(env, "spoke2", "delete", "-f", "-", input=limits, check=False)
        hmls_cli("cluster", "unjoin", name, *hub(env), "--force", check=False)
