"""Unit tests for config/grafana/hmls-dashboard.json against the metrics hmls really exports.

The exported series come from hmls.metrics.Metrics itself: every metric is given one observation
(labelled ones with a dummy value for each label) and the registry is collected, so the sample
names (``_total``, ``_bucket``/``_sum``/``_count`` ...) and their label names are exactly those a
scrape of /metrics shows.  The dashboard's PromQL must use only those names and labels, and
every metric must appear in some panel, so adding a metric without a panel fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from hmls.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "hmls-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])hmls_[a-zA-Z0-9_]+")
AGGREGATORS = ("sum", "min", "max", "avg", "count", "group", "stddev", "stdvar",
               "topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio")
AGG_CLAUSE_FIRST = re.compile(
    rf"\b(?:{'|'.join(AGGREGATORS)})\s+(by|without)\s*\(([^)]*)\)\s*\(")
AGG_BODY_FIRST = re.compile(rf"\b(?:{'|'.join(AGGREGATORS)})\s*\(")
CLAUSE_AFTER = re.compile(r"\s*(by|without)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(hmls_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
LABEL_VALUES = re.compile(r"label_values\(\s*(hmls_[a-zA-Z0-9_]+)[^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)")


@dataclass(frozen=True)
class Exported:
    labels: dict[str, frozenset[str]]  # sample name -> its label names
    families: dict[str, frozenset[str]]  # metric family -> its sample names


@cache
def exported() -> Exported:
    """Sample names and label names of every metric hmls.metrics.Metrics defines."""
    metrics = Metrics()
    wrappers = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert wrappers, "no prometheus_client metrics found on Metrics()"
    for metric in wrappers:
        # prometheus_client has no public accessor for a metric's label names
        names: tuple[str, ...] = metric._labelnames
        child = metric.labels(*(f"x-{n}" for n in names)) if names else metric
        if isinstance(child, Counter):
            child.inc()
        elif isinstance(child, Gauge):
            child.set(1)
        elif isinstance(child, Histogram):
            child.observe(0.1)
        else:  # a new metric type: teach this test how to record it
            raise AssertionError(f"unhandled metric type {type(metric).__name__}")
    labels: dict[str, set[str]] = {}
    families: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        samples = {s.name for s in family.samples}
        assert samples, f"{family.name}: no samples after one observation"
        families[family.name] = frozenset(samples)
        for s in family.samples:
            labels.setdefault(s.name, set()).update(s.labels)
    assert len(families) == len(wrappers), "registry holds metrics that are not attributes of Metrics"
    return Exported({k: frozenset(v) for k, v in labels.items()}, families)


@cache
def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # rows (collapsed ones hold their panels)


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query template variable."""
    out: list[tuple[str, str]] = []
    for p in all_panels(dashboard()["panels"]):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        out.append((f"variable {v['name']}", query))
        if v.get("definition"):
            out.append((f"variable {v['name']} definition", v["definition"]))
    return out


def matching_paren(expr: str, open_at: int) -> int:
    """Index of the ')' closing the '(' at open_at (PromQL strings are skipped)."""
    depth, i = 0, open_at
    while i < len(expr):
        c = expr[i]
        if c in "\"'":
            i += 1
            while expr[i] != c:
                i += 2 if expr[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def grouping_labels(expr: str) -> list[tuple[set[str], str]]:
    """(labels of a by/without clause, the aggregated body) for every aggregation in expr."""
    out: list[tuple[set[str], str]] = []
    for m in AGG_CLAUSE_FIRST.finditer(expr):  # sum by (a) (body)
        close = matching_paren(expr, m.end() - 1)
        out.append((split_labels(m.group(2)), expr[m.end():close]))
    for m in AGG_BODY_FIRST.finditer(expr):  # sum (body) by (a)
        close = matching_paren(expr, m.end() - 1)
        after = CLAUSE_AFTER.match(expr, close + 1)
        if after:
            out.append((split_labels(after.group(2)), expr[m.end():close]))
    return out


def split_labels(text: str) -> set[str]:
    return {label.strip() for label in text.split(",") if label.strip()}


def matcher_labels(selector: str) -> set[str]:
    labels, pos = set(), 0
    while pos < len(selector.strip()):
        m = MATCHER.match(selector, pos)
        assert m, f"cannot parse label matchers {selector!r}"
        labels.add(m.group(1))
        pos = m.end()
    return labels


def test_dashboard_header() -> None:
    d = dashboard()
    assert (d["title"], d["uid"], d["schemaVersion"]) == ("hmls controller", "hmls-controller", 39)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    cluster = variables["cluster"]
    assert cluster["type"] == "query" and cluster["multi"] and cluster["includeAll"]
    assert cluster["definition"] == "label_values(hmls_apply_total, cluster)"


@pytest.mark.parametrize(("where", "expr"), expressions(), ids=[where for where, _ in expressions()])
def test_expression_uses_only_exported_names_and_labels(where: str, expr: str) -> None:
    ex = exported()
    names = METRIC_NAME.findall(expr)
    assert names, f"{where}: no hmls metric in {expr!r}"
    unknown = sorted(set(names) - ex.labels.keys())
    assert not unknown, f"{where}: {unknown} not exported by hmls/metrics.py"

    for labels, body in grouping_labels(expr):
        for name in METRIC_NAME.findall(body):
            missing = labels - ex.labels[name]
            assert not missing, f"{where}: {name} has no label(s) {sorted(missing)} (by/without)"
    for name, selector in SELECTOR.findall(expr):
        missing = matcher_labels(selector) - ex.labels[name]
        assert not missing, f"{where}: {name} has no label(s) {sorted(missing)} (matcher)"
    for name, label in LABEL_VALUES.findall(expr):
        assert label in ex.labels[name], f"{where}: {name} has no label {label!r} (label_values)"


def test_every_metric_has_a_panel() -> None:
    used = {name for _, expr in expressions() for name in METRIC_NAME.findall(expr)}
    without = sorted(f for f, samples in exported().families.items() if not samples & used)
    assert not without, f"metrics defined in hmls/metrics.py but shown on no panel: {without}"


def test_panel_ids_unique_and_targets_well_formed() -> None:
    panels = list(all_panels(dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for p in panels:
        assert p["type"] in {"row", "timeseries", "stat"}, p["title"]
        if p["type"] == "row":
            continue
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), f"panel {p['id']}: targets {refs}"


def test_grid_layout_fits_and_does_not_overlap() -> None:
    boxes = []
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"panels {a!r} and {b!r} overlap"


def test_datasource_references_use_the_variable() -> None:
    found = 0

    def walk(node: Any, path: str) -> None:
        nonlocal found
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    found += 1
                    assert value == DATASOURCE, f"{path}.datasource is {value!r}"
                else:
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(dashboard(), "$")
    for p in all_panels(dashboard()["panels"]):
        for t in p.get("targets", []):
            assert t.get("datasource") == DATASOURCE, f"panel {p['id']} target {t['refId']}"
    assert found


def test_parsers_catch_mistakes() -> None:
    """The checks above would notice a wrong label or name (guards the regexes themselves)."""
    ex = exported()
    (labels, body), = grouping_labels('sum by (result, le) (rate(hmls_reconcile_total{a="x,}"}[5m]))')
    assert labels == {"result", "le"} and METRIC_NAME.findall(body) == ["hmls_reconcile_total"]
    assert labels - ex.labels["hmls_reconcile_total"] == {"le"}
    (labels, _), = grouping_labels("max(hmls_clusters) by (state)")
    assert labels == {"state"}
    assert matcher_labels('cluster=~"hub|$cluster", result!="a=\\"b\\""') == {"cluster", "result"}
    # a counter's family name drops _total: it is no series, so a query using it must fail
    assert "hmls_reconcile" in ex.families and "hmls_reconcile" not in ex.labels
    assert "le" in ex.labels["hmls_reconcile_duration_seconds_bucket"]
    assert "le" not in ex.labels["hmls_reconcile_duration_seconds_count"]
