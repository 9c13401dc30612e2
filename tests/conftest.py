"""The tests' fixtures: one real local environment per test session (etcd + kube-apiservers
for hub, spoke1, spoke2 and ingress, plus the MLService simulator), the spokes joined to the
hub, and one hmls controller process that tests can stop and restart. Helpers are in
tests/helpers.py; what the tests share with the benchmarks and the soak (the controller
runner, metrics reader, request counting, waiting) is hmls_devenv.harness."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hmls_devenv.environment import Environment, running
from hmls_devenv.harness import Controller

from hmls.domain.kubeconfig import vet
from hmls.kube.client import ClusterClient
from tests.helpers import AS_IS, FAST_PROBES, REPO, Prometheus, hmls_cli

ENV_DIR = Path(os.environ.get("HMLS_TEST_ENV_DIR", REPO / ".hmls-env" / "pytest"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def env() -> Iterator[Environment]:
    with running(ENV_DIR, spokes=2, audit=True) as environment:  # Lease terms and writers
        yield environment


@pytest.fixture(autouse=True)
def _all_clusters_up(request: pytest.FixtureRequest) -> None:
    """A fault test that could not restart an API server must not fail every later test."""
    if "env" in request.fixturenames:
        restarted = request.getfixturevalue("env").heal()
        if restarted:
            print(f"restarted API servers left down by an earlier test: {restarted}")


@pytest.fixture(scope="session")
async def clients(env: Environment) -> AsyncIterator[dict[str, ClusterClient]]:
    out = {}
    for name in env.state().clusters:
        out[name] = await ClusterClient.from_kubeconfig(
            name, vet(env.kubeconfig(name).read_bytes()))
    yield out
    for c in out.values():
        await c.close()


@pytest.fixture(scope="session")
def joined(env: Environment) -> list[str]:
    spokes = env.spokes()
    for name in spokes:
        hmls_cli("cluster", "join", name, "--kubeconfig", str(env.kubeconfig("hub")),
                 "--cluster-kubeconfig", str(env.kubeconfig(name)), *AS_IS)
    return spokes


@pytest.fixture(scope="session")
def slo_prometheus(env: Environment, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Prometheus]:
    """The operator's Prometheus of the session: it scrapes the MLService simulator's request
    metrics, and the session's controller queries it for rollout analysis."""
    with Prometheus(tmp_path_factory.mktemp("slo-prometheus"),
                    {"mlservice-simulator": env.simulator_metrics_url}) as prom:
        yield prom


@pytest.fixture(scope="session")
def controller(env: Environment, joined: list[str], slo_prometheus: Prometheus
               ) -> Iterator[Controller]:
    ctl = Controller(env, *FAST_PROBES, "--prometheus-url", slo_prometheus.url)
    ctl.start()
    yield ctl
    ctl.stop()


@pytest.fixture(scope="session")
def ingress(env: Environment, joined: list[str]) -> str:
    hmls_cli("cluster", "join", "ingress", "--kubeconfig", str(env.kubeconfig("hub")),
             "--cluster-kubeconfig", str(env.kubeconfig("ingress")), *AS_IS, check=False)
    return "ingress"
