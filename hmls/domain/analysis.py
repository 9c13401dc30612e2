"""Metric analysis of a rollout step: the pure part.

Where this sits: while a cluster's step of a Progressive rollout soaks, the reconciler asks
the rollout which metrics are due (``hmls.domain.rollout.Rollout.due``), renders each query
for that cluster here (``query_for``), has ``hmls.engine.analysis`` run it against the
operator's Prometheus, and hands the ``Measurement`` values back to the rollout, which keeps
one ``Tally`` per metric in the step (``status.rollout.clusters[].analysis``) and decides
with ``verdict``.

A measurement is **Successful** (a number inside the metric's ``thresholdRange``),
**Failed** (a number outside it) or **Inconclusive** (no sample, several series, not a
number, a query error, or no answer).  Inconclusive never counts as success.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hmls.domain.models import (
    ANALYSIS_PLACEHOLDER,
    AnalysisSpec,
    MetricSpec,
    ThresholdRange,
    parse_timestamp,
    timestamp,
)
from hmls.domain.wire import number, opt_text, text

SUCCESSFUL, FAILED, INCONCLUSIVE = "Successful", "Failed", "Inconclusive"
RESULTS = (SUCCESSFUL, FAILED, INCONCLUSIVE)
_PROMQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r",
                   "\t": "\\t"}


def escape(value: str) -> str:
    """A value made safe inside a PromQL string literal (double, single or no quotes
    around it: a quote or backslash in a label value cannot end the literal)."""
    return "".join(_PROMQL_ESCAPES.get(ch, ch) for ch in value)


class Unrenderable(ValueError):
    """A query names a cluster label the cluster does not have."""


def query_for(metric: MetricSpec, *, cluster: str, labels: Mapping[str, str], revision: int,
              namespace: str, name: str) -> str:
    """The metric's query for one cluster, placeholders replaced by escaped values."""
    values = {"cluster.name": cluster, "revision": str(revision), "namespace": namespace,
              "name": name, **{f"cluster.labels.{k}": v for k, v in labels.items()}}

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "${" + m.group(2) + "}"
        if m.group(2) not in values:
            raise Unrenderable(f"cluster {cluster} has no label "
                               f"{m.group(2).removeprefix('cluster.labels.')}")
        return escape(values[m.group(2)])
    return ANALYSIS_PLACEHOLDER.sub(one, metric.query)


def judge(value: float, threshold: ThresholdRange) -> str:
    if math.isnan(value):
        return INCONCLUSIVE
    low = threshold.min is None or value >= threshold.min
    high = threshold.max is None or value <= threshold.max
    return SUCCESSFUL if low and high else FAILED


@dataclass(frozen=True)
class Measurement:
    """One query's outcome."""

    metric: str
    result: str
    time: dt.datetime
    value: float | None = None
    message: str = ""

    @classmethod
    def of(cls, metric: MetricSpec, value: float | None, time: dt.datetime,
           why: str = "") -> Measurement:
        """A number judged against the metric's range, or (None) inconclusive, with why."""
        if value is None or math.isnan(value) or math.isinf(value):
            return cls(metric.name, INCONCLUSIVE, time, None,
                       why or f"not a finite number: {value}")
        result = judge(value, metric.threshold_range)
        message = "" if result == SUCCESSFUL else \
            f"{value:g} outside {metric.threshold_range}"
        return cls(metric.name, result, time, value, message)


@dataclass(frozen=True)
class Tally:
    """One metric over one step: counts since the step began to soak, and the last
    measurement (an item of ``status.rollout.clusters[].analysis``)."""

    metric: str
    successes: int = 0
    failures: int = 0
    inconclusive: int = 0
    """Inconclusive measurements in a row (a conclusive one resets it)."""
    last: Measurement | None = None

    def add(self, m: Measurement) -> Tally:
        return replace(self, successes=self.successes + (m.result == SUCCESSFUL),
                       failures=self.failures + (m.result == FAILED),
                       inconclusive=self.inconclusive + 1 if m.result == INCONCLUSIVE else 0,
                       last=m)

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "successes": self.successes,
                               "failures": self.failures, "inconclusive": self.inconclusive}
        if self.last is not None:
            out.update(result=self.last.result, time=timestamp(self.last.time))
            if self.last.value is not None:
                out["value"] = self.last.value
            if self.last.message:
                out["message"] = self.last.message
        return out

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> Tally:
        metric, result, when = text(raw.get("metric")), opt_text(raw.get("result")), None
        try:
            when = parse_timestamp(raw["time"]) if isinstance(raw.get("time"), str) else None
        except ValueError:
            when = None
        value = raw.get("value")
        last = Measurement(metric, result, when,
                           float(value) if isinstance(value, int | float) else None,
                           text(raw.get("message"))) \
            if result in RESULTS and when is not None else None
        return cls(metric, number(raw.get("successes")) or 0, number(raw.get("failures")) or 0,
                   number(raw.get("inconclusive")) or 0, last)


def _measured(spec: AnalysisSpec, tallies: Sequence[Tally], soaking_since: dt.datetime
              ) -> dict[str, dt.datetime]:
    """When each metric was last measured in this soak (its start for one not yet)."""
    last = {t.metric: t.last.time for t in tallies if t.last is not None}
    return {m.name: max(last.get(m.name, soaking_since), soaking_since) for m in spec.metrics}


def due(spec: AnalysisSpec, tallies: Sequence[Tally], now: dt.datetime,
        soaking_since: dt.datetime) -> list[MetricSpec]:
    """The metrics to measure now: ``intervalSeconds`` after the last measurement, the
    first ``intervalSeconds`` into the soak (a query whose window is no longer than that
    sees only the new revision's requests)."""
    last = _measured(spec, tallies, soaking_since)
    every = dt.timedelta(seconds=spec.interval_seconds)
    return [m for m in spec.metrics if now - last[m.name] >= every]


def next_due(spec: AnalysisSpec, tallies: Sequence[Tally], now: dt.datetime,
             soaking_since: dt.datetime) -> float:
    """Seconds until a metric is due (0: one is due now)."""
    return max(0.0, min(spec.interval_seconds - (now - t).total_seconds()
                        for t in _measured(spec, tallies, soaking_since).values()))


def record(tallies: Sequence[Tally], measured: Sequence[Measurement]) -> tuple[Tally, ...]:
    by_name = {t.metric: t for t in tallies}
    for m in measured:
        by_name[m.metric] = by_name.get(m.metric, Tally(m.metric)).add(m)
    return tuple(by_name.values())


@dataclass(frozen=True)
class Verdict:
    failed: str | None = None
    """Why the step failed (more failed measurements than a metric tolerates)."""
    waiting: str | None = None
    """Why the step waits for data (a metric past its inconclusiveLimit)."""
    passed: bool = False
    """Every metric has a successful measurement in this step."""


def verdict(spec: AnalysisSpec, tallies: Sequence[Tally]) -> Verdict:
    by_name = {t.metric: t for t in tallies}
    for m in spec.metrics:
        t = by_name.get(m.name)
        if t is not None and t.failures > m.failure_limit:
            shown = t.last.message if t.last and t.last.result == FAILED else ""
            return Verdict(failed=f"metric {m.name} failed {t.failures} measurement"
                           f"{'s' if t.failures != 1 else ''} (failureLimit {m.failure_limit})"
                           + (f": {shown}" if shown else ""))
    stuck = [(m, by_name[m.name]) for m in spec.metrics
             if m.name in by_name and by_name[m.name].inconclusive >= m.inconclusive_limit]
    if stuck:
        m, t = stuck[0]
        why = (f"metric {m.name} inconclusive {t.inconclusive} times in a row"
               + (f": {t.last.message}" if t.last and t.last.message else ""))
        if spec.on_inconclusive == "Fail":
            return Verdict(failed=why)
        return Verdict(waiting=why)
    return Verdict(passed=all(by_name.get(m.name, Tally(m.name)).successes > 0
                              for m in spec.metrics))
