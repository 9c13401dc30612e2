"""Metric analysis, the pure part (hmls.domain.analysis) and the reading of Prometheus
answers (hmls.engine.analysis.sample): rendering, judging, counting, the step's verdict."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hmls.domain.analysis import (
    FAILED,
    INCONCLUSIVE,
    SUCCESSFUL,
    Measurement,
    Tally,
    Unrenderable,
    due,
    escape,
    next_due,
    query_for,
    record,
    verdict,
)
from hmls.domain.models import AnalysisSpec, InvalidSpec, MetricSpec, parse_spec
from hmls.engine.analysis import sample

T0 = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)


def metric(**fields: Any) -> MetricSpec:
    return MetricSpec.model_validate({"name": "error-ratio", "query": "q",
                                      "thresholdRange": {"max": 0.01}, **fields})


def spec(*metrics: MetricSpec, **fields: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate({"intervalSeconds": 10, "metrics": [
        m.model_dump(by_alias=True) for m in metrics or (metric(),)], **fields})


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# ----- rendering ---------------------------------------------------------------------------

def test_placeholders_are_replaced_with_escaped_values() -> None:
    m = metric(query='x{cluster="${cluster.name}",zone="${cluster.labels.zone}",'
                     'r="${revision}",ns="${namespace}",n="${name}",lit="$${name}"}')
    got = query_for(m, cluster="spoke1", labels={"zone": 'eu"1\\'}, revision=3,
                    namespace="demo", name="svc")
    assert got == ('x{cluster="spoke1",zone="eu\\"1\\\\",r="3",ns="demo",n="svc",'
                   'lit="${name}"}')


def test_a_quote_cannot_end_the_string_literal() -> None:
    assert escape("a'b\"c\nd") == "a\\'b\\\"c\\nd"


def test_a_label_the_cluster_lacks_cannot_be_rendered() -> None:
    with pytest.raises(Unrenderable, match="cluster spoke1 has no label zone"):
        query_for(metric(query="${cluster.labels.zone}"), cluster="spoke1", labels={},
                  revision=1, namespace="d", name="n")


@pytest.mark.parametrize(("analysis", "why"), [
    ({"metrics": [{"name": "a", "query": "${cluster.nme}", "thresholdRange": {"max": 1}}]},
     "unknown placeholder ${cluster.nme}"),
    ({"metrics": [{"name": "a", "query": "q", "thresholdRange": {}}]},
     "thresholdRange needs min, max or both"),
    ({"metrics": [{"name": "a", "query": "q", "thresholdRange": {"min": 2, "max": 1}}]},
     "thresholdRange min 2.0 is above max 1.0"),
    ({"metrics": [{"name": "a", "query": "q", "thresholdRange": {"max": 1}}] * 2},
     "metric names must be unique: a"),
    ({"intervalSeconds": 0, "metrics": [{"name": "a", "query": "q",
                                         "thresholdRange": {"max": 1}}]},
     "intervalSeconds"),
    ({"metrics": []}, "metrics"),
])
def test_a_bad_analysis_section_is_a_precise_spec_error(analysis: dict[str, Any],
                                                        why: str) -> None:
    with pytest.raises(InvalidSpec, match=why.replace("$", r"\$").replace("{", r"\{")
                       .replace("[", r"\[")):
        parse_spec({"workloads": [{"clusters": ["a"], "manifests": [{"kind": "x"}]}],
                    "rollout": {"strategy": "Progressive", "analysis": analysis}})


# ----- judging and counting ----------------------------------------------------------------

@pytest.mark.parametrize(("threshold", "value", "result"), [
    ({"max": 0.01}, 0.01, SUCCESSFUL), ({"max": 0.01}, 0.02, FAILED),
    ({"min": 0.9}, 0.9, SUCCESSFUL), ({"min": 0.9}, 0.5, FAILED),
    ({"min": 1, "max": 2}, 3, FAILED), ({"min": 1, "max": 2}, 1.5, SUCCESSFUL),
    ({"max": 1}, float("nan"), INCONCLUSIVE), ({"max": 1}, float("inf"), INCONCLUSIVE),
    ({"max": 1}, None, INCONCLUSIVE),
])
def test_a_measurement_is_judged_against_its_range(threshold: dict[str, float],
                                                   value: float | None, result: str) -> None:
    got = Measurement.of(metric(thresholdRange=threshold), value, T0, "why")
    assert got.result == result
    if result == FAILED:
        assert "outside" in got.message


def test_tallies_count_and_survive_the_status() -> None:
    m = metric()
    tallies = record((), [Measurement.of(m, 0.001, at(0))])
    tallies = record(tallies, [Measurement.of(m, None, at(10), "no sample")])
    tallies = record(tallies, [Measurement.of(m, None, at(20), "no sample")])
    (t,) = tallies
    assert (t.successes, t.failures, t.inconclusive) == (1, 0, 2)
    assert Tally.from_status(t.to_status()) == t
    (t,) = record(tallies, [Measurement.of(m, 0.5, at(30))])
    assert (t.successes, t.failures, t.inconclusive) == (1, 1, 0)
    assert Tally.from_status(t.to_status()) == t


def test_due_every_interval_the_first_an_interval_into_the_soak() -> None:
    s = spec()  # a query window no longer than the interval sees only the new revision
    assert due(s, (), at(9), T0) == [] and next_due(s, (), at(4), T0) == 6.0
    assert [m.name for m in due(s, (), at(10), T0)] == ["error-ratio"]
    tallies = record((), [Measurement.of(s.metrics[0], 0.0, at(10))])
    assert due(s, tallies, at(19), T0) == [] and next_due(s, tallies, at(19), T0) == 1.0
    assert len(due(s, tallies, at(20), T0)) == 1 and next_due(s, tallies, at(22), T0) == 0.0
    # a tally of an earlier soak does not count: this one began at 30
    assert due(s, tallies, at(35), at(30)) == []


def test_verdict() -> None:
    lenient = metric(failureLimit=1, inconclusiveLimit=2)
    s = spec(lenient)
    one = record((), [Measurement.of(lenient, 0.5, T0)])
    assert verdict(s, one).failed is None and not verdict(s, one).passed
    two = record(one, [Measurement.of(lenient, 0.7, at(10))])
    assert verdict(s, two).failed == ("metric error-ratio failed 2 measurements "
                                      "(failureLimit 1): 0.7 outside [, 0.01]")
    ok = record(one, [Measurement.of(lenient, 0.0, at(10))])
    assert verdict(s, ok).passed
    starved = record(ok, [Measurement.of(lenient, None, at(t), "no sample") for t in (20, 30)])
    assert verdict(s, starved).waiting == ("metric error-ratio inconclusive 2 times in a row: "
                                           "no sample")
    assert verdict(spec(lenient, onInconclusive="Fail"), starved).failed is not None


# ----- reading Prometheus' answers ---------------------------------------------------------

def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, v]} for v in values]}}


@pytest.mark.parametrize(("body", "value", "why"), [
    (vector("0.25"), 0.25, ""),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, 3.0, ""),
    (vector("NaN"), float("nan"), ""),
    (vector(), None, "the query returned no sample"),
    (vector("1", "2"), None, "the query returned 2 series, not one"),
    (vector("x"), None, "the sample is not a number"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, None,
     "query failed: bad_data: parse error"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, None,
     "the query returned a matrix, not a number"),
    ([], None, "Prometheus answered something other than a JSON object"),
])
def test_sample(body: Any, value: float | None, why: str) -> None:
    got, message = sample(body)
    assert message.startswith(why)
    if value is None or value == value:
        assert got == value
    else:
        assert got != got  # NaN: judged inconclusive by Measurement.of
