"""The MLService simulator's traffic, without a server: what a Ready MLService's releases
answer each second (exact over time), the error-ratio and latency knobs, the series of a
deleted MLService, and the Prometheus exposition of the counts."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hmls_devenv.simulator import (
    ERROR_RATIO_KNOB,
    LATENCY_KNOB,
    READY_KNOB,
    Knobs,
    Traffic,
    desired_status,
    knobs,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def mlservice(name: str = "torch", *, canary_percent: int | None = None,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """An MLService with the status the simulator gives it."""
    spec: dict[str, Any] = {"default": "origin", "releases": [
        {"name": "origin", "predictor": {"minReplicas": 1}},
        {"name": "next", "predictor": {"minReplicas": 1}}]}
    if canary_percent is not None:
        spec |= {"canary": "next", "canaryTrafficPercent": canary_percent}
    obj = {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
           "metadata": {"name": name, "namespace": "demo", "annotations": annotations or {}},
           "spec": spec}
    obj["status"] = desired_status(obj, domain="spoke1.example.com", previous=None,
                                   now="2026-12-07T00:00:00Z")
    return obj


def counts(traffic: Traffic, release: str = "origin", cluster: str = "spoke1",
           name: str = "torch") -> tuple[int, int]:
    req = traffic.requests[(cluster, "demo", name, release)]
    return req.ok, req.errors


def run(traffic: Traffic, seconds: int) -> None:
    for _ in range(seconds):
        traffic.tick()


def test_a_ready_mlservice_answers_the_rate() -> None:
    traffic = Traffic()
    assert traffic.observe("spoke1", mlservice()) == []
    assert counts(traffic) == (0, 0)  # the series exist before the first request
    run(traffic, 10)
    assert counts(traffic) == (200, 0)
    req = traffic.requests[("spoke1", "demo", "torch", "origin")]
    assert req.buckets() == [("0.01", 0), ("0.025", 0), ("0.05", 200), ("0.1", 200),
                             ("0.25", 200), ("0.5", 200), ("1.0", 200), ("2.5", 200),
                             ("5.0", 200), ("+Inf", 200)]
    assert req.seconds == pytest.approx(10.0)


def test_releases_split_by_traffic_percent_with_fractions_carried() -> None:
    traffic = Traffic()
    traffic.observe("spoke1", mlservice(canary_percent=33,
                                        annotations={ERROR_RATIO_KNOB: "0.1"}))
    run(traffic, 1)  # 6.6 and 13.4 requests due: 6 and 13 answered, the rest carried
    assert counts(traffic, "next") == (6, 0) and counts(traffic, "origin") == (12, 1)
    run(traffic, 9)
    assert sum(counts(traffic, "next")) == 66 and sum(counts(traffic, "origin")) == 134
    assert counts(traffic, "next")[1] == 6 and counts(traffic, "origin")[1] == 13
    run(traffic, 90)  # the ratios are exact over time
    assert counts(traffic, "next") == (594, 66) and counts(traffic, "origin") == (1206, 134)


def test_no_traffic_while_not_ready_or_at_zero_percent() -> None:
    traffic = Traffic()
    traffic.observe("spoke1", mlservice(canary_percent=0))
    traffic.observe("spoke1", mlservice("down", annotations={READY_KNOB: "false"}))
    run(traffic, 5)
    assert counts(traffic, "next") == (0, 0) and counts(traffic) == (100, 0)
    assert not any(k[2] == "down" for k in traffic.requests)
    traffic.observe("spoke1", mlservice(annotations={READY_KNOB: "false"}))  # goes not ready: stops
    run(traffic, 5)
    assert counts(traffic) == (100, 0)


def test_error_ratio_follows_a_knob_changed_on_the_way() -> None:
    traffic = Traffic()
    traffic.observe("spoke1", mlservice())
    run(traffic, 5)
    traffic.observe("spoke1", mlservice(annotations={ERROR_RATIO_KNOB: "0.25",
                                                     LATENCY_KNOB: "0.3"}))
    run(traffic, 5)
    assert counts(traffic) == (100 + 75, 25)
    req = traffic.requests[("spoke1", "demo", "torch", "origin")]
    assert dict(req.buckets())["0.25"] == 100 and dict(req.buckets())["0.5"] == 200
    assert req.seconds == pytest.approx(100 * 0.05 + 100 * 0.3)


@pytest.mark.parametrize(("annotations", "want"), [
    ({}, Knobs(Fraction(0), 0.05)),
    ({ERROR_RATIO_KNOB: "0.05", LATENCY_KNOB: "1.5"}, Knobs(Fraction(1, 20), 1.5)),
    ({ERROR_RATIO_KNOB: " 1 ", LATENCY_KNOB: "0"}, Knobs(Fraction(1), 0.0)),
    ({ERROR_RATIO_KNOB: "1/3"}, Knobs(Fraction(1, 3), 0.05)),
])
def test_valid_knobs(annotations: dict[str, str], want: Knobs) -> None:
    assert knobs(mlservice(annotations=annotations)) == (want, [])


@pytest.mark.parametrize(("key", "value"), [
    (ERROR_RATIO_KNOB, "lots"), (ERROR_RATIO_KNOB, "1.5"), (ERROR_RATIO_KNOB, "-0.1"),
    (ERROR_RATIO_KNOB, "1/0"), (ERROR_RATIO_KNOB, ""),
    (LATENCY_KNOB, "slow"), (LATENCY_KNOB, "-1"), (LATENCY_KNOB, "nan"), (LATENCY_KNOB, "inf"),
])
def test_an_invalid_knob_is_ignored_and_said(key: str, value: str) -> None:
    got, problems = knobs(mlservice(annotations={key: value}))
    assert got == Knobs()
    [problem] = problems
    assert problem.startswith(f"{key}={value!r} ignored (")


def test_a_deleted_mlservice_loses_its_series() -> None:
    traffic = Traffic()
    for cluster in ("spoke1", "spoke2"):
        traffic.observe(cluster, mlservice(canary_percent=50))
    run(traffic, 2)
    traffic.forget("spoke1", "demo", "torch")
    run(traffic, 2)
    assert sorted(traffic.requests) == [("spoke2", "demo", "torch", "next"),
                                        ("spoke2", "demo", "torch", "origin")]
    assert counts(traffic, "next", "spoke2") == (40, 0)


def test_exposition() -> None:
    traffic = Traffic()
    traffic.observe("spoke1",
                    mlservice(annotations={ERROR_RATIO_KNOB: "0.5", LATENCY_KNOB: "0.02"}))
    run(traffic, 1)
    registry = CollectorRegistry()
    registry.register(traffic)
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    assert {n: f.type for n, f in families.items()} == {
        "mlservice_requests": "counter", "mlservice_request_duration_seconds": "histogram"}
    key = {"cluster": "spoke1", "namespace": "demo", "mlservice": "torch", "release": "origin"}
    assert [(s.name, s.labels, s.value) for s in families["mlservice_requests"].samples] == [
        ("mlservice_requests_total", {**key, "code": "200"}, 10),
        ("mlservice_requests_total", {**key, "code": "500"}, 10)]
    duration = families["mlservice_request_duration_seconds"].samples
    assert all(s.labels == {**key, "le": s.labels["le"]} for s in duration[:-2])
    assert [(s.labels["le"], s.value) for s in duration[:-2]] == [
        ("0.01", 0), ("0.025", 20), ("0.05", 20), ("0.1", 20), ("0.25", 20), ("0.5", 20),
        ("1.0", 20), ("2.5", 20), ("5.0", 20), ("+Inf", 20)]
    assert [(s.name, s.labels, s.value) for s in duration[-2:]] == [
        ("mlservice_request_duration_seconds_count", key, 20),
        ("mlservice_request_duration_seconds_sum", key, pytest.approx(0.4))]
