"""The status write against a real API server: for random pairs of status values A and B,
writing B over a stored A through the controller's own write (``Hub.write_status``) leaves
exactly B on the server, and a write from a stale read is refused, not merged.

The HyperMLService CRD is installed on the ingress cluster for this test (a real API server
with the real schema, which no controller reconciles HyperMLServices on, so nothing else
writes these statuses)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hmls_devenv.environment import Environment
from hypothesis import HealthCheck, given, settings

from hmls.domain.kubeconfig import vet
from hmls.domain.models import API_VERSION, KIND
from hmls.domain.status import Status
from hmls.engine.hub import Hub
from hmls.engine.hubcache import HubCache
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import HMLS
from hmls.metrics import Metrics
from tests.helpers import REPO, kubectl
from tests.strategies import statuses

NAMESPACE = "t-status-write"
_names = itertools.count()


@pytest.fixture(scope="module")
def server(env: Environment) -> Environment:
    kubectl(env, "ingress", "apply", "--server-side", "-k", str(REPO / "manifests" / "hub"))
    kubectl(env, "ingress", "wait", "--for=condition=Established", "--timeout=60s",
            "crd/hypermlservices.tensorstack.dev")
    kubectl(env, "ingress", "create", "namespace", NAMESPACE, check=False)
    return env


async def _created(env: Environment, name: str) -> tuple[ClusterClient, Hub, Obj]:
    """A client of the server, the controller's Hub over it, and a new HyperMLService."""
    client = await ClusterClient.from_kubeconfig(
        "ingress", vet(env.kubeconfig("ingress").read_bytes()))
    obj = await client.create(HMLS, NAMESPACE, {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"workloads": [{"clusters": ["spoke1"], "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]}]}})
    return client, Hub(client, HubCache({}), Metrics()), obj


async def _write_b_over_a(env: Environment, a: Status, b: Status) -> tuple[Obj, Obj | None]:
    client, hub, obj = await _created(env, f"w{next(_names)}")
    try:
        first = await hub.write_status(obj, a)
        second = await hub.write_status(first or obj, b)
        stored = await client.get(HMLS, NAMESPACE, obj["metadata"]["name"])
        assert stored is not None
        await client.delete(HMLS, NAMESPACE, obj["metadata"]["name"])
        return stored, second
    finally:
        await client.close()


@settings(max_examples=40, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(a=statuses, b=statuses)
def test_writing_b_over_a_leaves_exactly_b_on_the_server(server: Environment, a: Status,
                                                         b: Status) -> None:
    stored, written = asyncio.run(_write_b_over_a(server, a, b))
    assert stored.get("status", {}) == b.to_wire()
    assert Status.of(stored) == b
    if a.to_wire() == b.to_wire():
        assert written is None  # nothing changed: nothing was sent


def test_a_write_from_a_stale_read_is_a_conflict(server: Environment) -> None:
    async def run() -> None:
        client, hub, obj = await _created(server, "stale")
        try:
            await hub.write_status(obj, Status(observed_generation=1))
            with pytest.raises(errors.Conflict):  # obj is the read before that write
                await hub.write_status(obj, Status(observed_generation=2))
            await client.delete(HMLS, NAMESPACE, "stale")
        finally:
            await client.close()
    asyncio.run(run())
