"""Unit tests for the pure part of the MLService simulator: ``desired_status``, and the
view of an MLService its cache keeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hmls_devenv.simulator import (
    ERROR_RATIO_KNOB,
    READY_KNOB,
    Simulator,
    Traffic,
    desired_status,
    knobs,
    view,
)

from hmls.kube.errors import Unreachable

DOMAIN = "spoke1.example.com"
T0 = "2024-01-01T00:00:00Z"
NOW = "2024-06-01T12:00:00Z"


def mlservice(*, name: str = "torch", namespace: str | None = "demo",
              annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations is not None:
        meta["annotations"] = annotations
    spec.setdefault("default", "origin")
    spec.setdefault("releases", [{"name": "origin", "predictor": {"minReplicas": 2}}])
    return {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService", "metadata": meta,
            "spec": spec}


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_ready_status_shape_and_urls() -> None:
    out = desired_status(mlservice(), domain=DOMAIN, previous=None, now=NOW)
    assert out == {
        "address": {"url": "http://torch.demo.ksvc.spoke1.example.com"},
        "conditions": [
            {"type": "Paused", "status": "False", "lastTransitionTime": NOW},
            {"type": "Ready", "status": "True", "lastTransitionTime": NOW},
        ],
        "defaultRelease": "origin",
        "releases": [{
            "name": "origin", "ready": True, "readyReplicas": 2, "totalReplicas": 2,
            "trafficPercent": 100,
            "url": "http://torch-predict-origin.demo.ksvc.spoke1.example.com",
        }],
    }


def test_namespace_defaults_to_default() -> None:
    out = desired_status(mlservice(namespace=None), domain="d", previous=None, now=NOW)
    assert out["address"]["url"] == "http://torch.default.ksvc.d"
    assert out["releases"][0]["url"] == "http://torch-predict-origin.default.ksvc.d"


def test_canary_traffic_split() -> None:
    svc = mlservice(
        default="origin", canary="next", canaryTrafficPercent=20,
        releases=[
            {"name": "origin", "predictor": {"minReplicas": 3}},
            {"name": "old", "predictor": {"minReplicas": 1}},
            {"name": "next", "predictor": {"minReplicas": 1}},
        ],
    )
    out = desired_status(svc, domain=DOMAIN, previous=None, now=NOW)
    assert out["canaryRelease"] == "next"
    assert out["defaultRelease"] == "origin"
    by_name = {r["name"]: r for r in out["releases"]}
    assert set(by_name) == {"origin", "next"}  # releases neither default nor canary are omitted
    assert by_name["origin"]["trafficPercent"] == 80
    assert by_name["next"]["trafficPercent"] == 20
    assert by_name["origin"]["totalReplicas"] == 3
    assert by_name["next"]["url"] == "http://torch-predict-next.demo.ksvc.spoke1.example.com"
    assert sum(r["trafficPercent"] for r in out["releases"]) == 100


def test_canary_without_percent_gets_no_traffic() -> None:
    svc = mlservice(canary="next", releases=[{"name": "origin"}, {"name": "next"}])
    out = desired_status(svc, domain=DOMAIN, previous=None, now=NOW)
    assert [(r["name"], r["trafficPercent"]) for r in out["releases"]] == [
        ("origin", 100), ("next", 0)]


def test_no_canary_ignores_canary_percent_and_has_no_canary_release() -> None:
    out = desired_status(mlservice(canaryTrafficPercent=30), domain=DOMAIN, previous=None,
                         now=NOW)
    assert "canaryRelease" not in out
    assert out["releases"][0]["trafficPercent"] == 100


def test_replicas_default_to_one() -> None:
    svc = mlservice(releases=[{"name": "origin"}])
    rel = desired_status(svc, domain=DOMAIN, previous=None, now=NOW)["releases"][0]
    assert (rel["readyReplicas"], rel["totalReplicas"]) == (1, 1)


@pytest.mark.parametrize("value", ["false", "False", "FALSE"])
def test_ready_knob_false_makes_not_ready(value: str) -> None:
    svc = mlservice(annotations={READY_KNOB: value})
    out = desired_status(svc, domain=DOMAIN, previous=None, now=NOW)
    ready = conds(out)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "PredictorNotReady"
    assert ready["message"] == "simulated: 0 of the predictor's replicas are ready"
    assert conds(out)["Paused"]["status"] == "False"
    assert out["releases"] == [{
        "name": "origin", "ready": False, "readyReplicas": 0, "totalReplicas": 2,
        "trafficPercent": 100,
        "url": "http://torch-predict-origin.demo.ksvc.spoke1.example.com",
    }]


@pytest.mark.parametrize("annotations", [{READY_KNOB: "true"}, {"other": "false"}, {}])
def test_ready_knob_absent_or_true_is_ready(annotations: dict[str, str]) -> None:
    out = desired_status(mlservice(annotations=annotations), domain=DOMAIN, previous=None,
                         now=NOW)
    assert conds(out)["Ready"]["status"] == "True"
    assert out["releases"][0]["readyReplicas"] == 2


def test_transition_time_preserved_when_unchanged() -> None:
    first = desired_status(mlservice(), domain=DOMAIN, previous=None, now=T0)
    again = desired_status(mlservice(), domain=DOMAIN, previous=first, now=NOW)
    assert again == first
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {T0}


def test_transition_time_moves_only_for_the_changed_condition() -> None:
    first = desired_status(mlservice(), domain=DOMAIN, previous=None, now=T0)
    broken = desired_status(mlservice(annotations={READY_KNOB: "false"}), domain=DOMAIN,
                            previous=first, now=NOW)
    assert conds(broken)["Paused"]["lastTransitionTime"] == T0
    assert conds(broken)["Ready"]["lastTransitionTime"] == NOW

    later = "2024-07-01T00:00:00Z"
    recovered = desired_status(mlservice(), domain=DOMAIN, previous=broken, now=later)
    assert conds(recovered)["Ready"] == {"type": "Ready", "status": "True",
                                         "lastTransitionTime": later}
    assert conds(recovered)["Paused"]["lastTransitionTime"] == T0


def test_does_not_mutate_inputs() -> None:
    svc = mlservice()
    previous = desired_status(svc, domain=DOMAIN, previous=None, now=T0)
    snapshot = (repr(svc), repr(previous))
    desired_status(svc, domain=DOMAIN, previous=previous, now=NOW)
    assert (repr(svc), repr(previous)) == snapshot


class Flaky:
    """A spoke whose API server is down for the first ``down`` requests."""

    name = "spoke1"

    def __init__(self, obj: dict[str, Any], down: int) -> None:
        self.obj, self.down, self.patches = obj, down, 0

    def _call(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise Unreachable("cannot connect to 127.0.0.1:1")

    async def get(self, res: Any, namespace: str, name: str) -> dict[str, Any]:
        self._call()
        return self.obj

    async def patch(self, res: Any, namespace: str, name: str, patch: dict[str, Any], *,
                    subresource: str, field_manager: str) -> dict[str, Any]:
        self._call()
        self.patches += 1
        self.obj = {**self.obj, "status": patch["status"]}
        return self.obj


async def test_a_status_write_that_failed_is_tried_again() -> None:
    """Found by the full soak of 2026-12-07 (seed 3182763439): a write that failed while the
    spoke's API server was down was never tried again, and the MLService had no status."""
    spoke = Flaky(mlservice(), down=3)
    sim = Simulator(spoke, domain=DOMAIN, delay=0.01, traffic=Traffic())  # type: ignore[arg-type]
    await sim.write_status(("demo", "torch"))
    assert spoke.patches == 1 and conds(spoke.obj["status"])["Ready"]["status"] == "True"


class Racing(Flaky):
    """A spoke where the ready knob is removed (hmls applies a fix) while the simulator's
    status write is under way: the fix, then the write, land, and both watch events reach the
    simulator before the write returns."""

    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__(obj, down=0)
        self.sim: Simulator | None = None

    async def patch(self, res: Any, namespace: str, name: str, patch: dict[str, Any], *,
                    subresource: str, field_manager: str) -> dict[str, Any]:
        assert self.sim is not None
        if self.patches == 0:
            fixed = {**self.obj, "metadata": {**self.obj["metadata"], "annotations": {}}}
            self.sim._on_event("MODIFIED", view(self.obj), view(fixed))
            self.obj = fixed
        before = self.obj
        written = await super().patch(res, namespace, name, patch, subresource=subresource,
                                      field_manager=field_manager)
        self.sim._on_event("MODIFIED", view(before), view(written))
        return written


async def test_a_change_while_the_status_is_written_is_written_too() -> None:
    """Found by CI's soak of 2026-12-07 (seed 671400724): the events of a change that landed
    while a status write was under way found the write pending and were dropped, and the
    MLService kept the status of the object as it was read (not Ready) for good."""
    ready_before = mlservice()
    svc = mlservice(annotations={READY_KNOB: "false"})
    svc["status"] = desired_status(ready_before, domain=DOMAIN, previous=None, now=T0)
    spoke = Racing(svc)
    sim = spoke.sim = Simulator(spoke, domain=DOMAIN, delay=0.01,  # type: ignore[arg-type]
                                traffic=Traffic())
    sim._on_event("MODIFIED", view(svc), view(svc))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if spoke.patches >= 2:
            break
    assert conds(spoke.obj["status"])["Ready"]["status"] == "True", spoke.obj["status"]


@pytest.mark.parametrize("svc", [
    mlservice(),
    mlservice(namespace=None, annotations={READY_KNOB: "false", "team": "x" * 2000}),
    mlservice(default="origin", canary="next", canaryTrafficPercent=30,
              annotations={ERROR_RATIO_KNOB: "0.2"},
              releases=[{"name": "origin", "predictor": {"minReplicas": 3, "model": {
                  "modelUri": "s3://m/" + "y" * 2000}}},
                        {"name": "next", "predictor": {}}, {"name": "old"}]),
])
def test_the_cached_view_gives_the_same_status_and_knobs(svc: dict[str, Any]) -> None:
    svc["status"] = desired_status(svc, domain=DOMAIN, previous=None, now=T0)
    slim = view(svc)
    assert desired_status(slim, domain=DOMAIN, previous=slim["status"], now=NOW) == \
        desired_status(svc, domain=DOMAIN, previous=svc["status"], now=NOW)
    assert knobs(slim) == knobs(svc)
    assert "x" * 100 not in repr(slim) and "y" * 100 not in repr(slim)  # nor payloads
