"""Selectors, placements and overrides: the pure part of fleet operations."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmls.domain.models import (
    InvalidSpec,
    LabelSelector,
    Owner,
    follows_labels,
    label_problem,
    named_clusters,
    parse_spec,
)
from hmls.domain.render import placements, render
from hmls.domain.status import selected

OWNER = Owner("demo", "svc", "uid-1")
FLEET = {"eu1": {"region": "eu", "gpu": "a100"}, "eu2": {"region": "eu"},
         "us1": {"region": "us", "gpu": "h100"}}


def cm(name: str = "cfg", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": data or {"bucket": "s3://models"}}


def spec(*workloads: dict[str, Any]) -> Any:
    return parse_spec({"workloads": list(workloads)})


# ----- selectors ---------------------------------------------------------------------------
@pytest.mark.parametrize(("selector", "chosen"), [
    ({}, ["eu1", "eu2", "us1"]),
    ({"matchLabels": {"region": "eu"}}, ["eu1", "eu2"]),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, ["eu1", "us1"]),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, ["eu2"]),
    ({"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100", "b200"]}]},
     ["us1"]),
    ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["h100"]}]},
     ["eu1", "eu2"]),
    ({"matchLabels": {"region": "eu"},
      "matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, ["eu1"]),
    ({"matchLabels": {"region": "ap"}}, []),
])
def test_a_selector_chooses_clusters_as_kubernetes_does(selector: dict[str, Any],
                                                        chosen: list[str]) -> None:
    s = spec({"clusterSelector": selector, "manifests": [cm()]})
    assert placements(s, FLEET) == [chosen]


def test_named_clusters_come_first_then_the_selected_ones_by_name() -> None:
    s = spec({"clusters": ["us1", "zz"], "clusterSelector": {"matchLabels": {"region": "eu"}},
              "manifests": [cm()]}, {"clusters": ["eu2"], "manifests": [cm("other")]})
    assert placements(s, FLEET) == [["us1", "zz", "eu1", "eu2"], ["eu2"]]
    assert [p.to_wire() for p in selected(s, placements(s, FLEET))] == [
        {"workload": 0, "selector": "region=eu", "clusters": ["us1", "zz", "eu1", "eu2"]}]


def test_selectors_read_like_kubectl_selectors() -> None:
    sel = LabelSelector.model_validate({
        "matchLabels": {"region": "eu"},
        "matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a", "b"]},
                             {"key": "spot", "operator": "DoesNotExist"},
                             {"key": "ssd", "operator": "Exists"}]})
    assert str(sel) == "region=eu,gpu in (a,b),!spot,ssd"
    assert str(LabelSelector()) == "(every cluster)"


@pytest.mark.parametrize(("workload", "message"), [
    ({"manifests": [cm()]}, "a workload needs clusters or clusterSelector"),
    ({"clusters": [], "manifests": [cm()]}, "a workload needs clusters or clusterSelector"),
    ({"clusterSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
      "manifests": [cm()]}, "operator In needs values"),
    ({"clusterSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                                "values": ["x"]}]},
      "manifests": [cm()]}, "operator Exists takes no values"),
    ({"clusters": ["a"], "manifests": [cm()], "overrides": [{"mergePatch": {}}]},
     "an override needs clusters or clusterSelector"),
    ({"clusters": ["a"], "manifests": [cm()],
      "overrides": [{"clusters": ["a"], "mergePatch": {}, "jsonPatch": []}]},
     "an override needs exactly one of mergePatch and jsonPatch"),
])
def test_incomplete_selectors_and_overrides_are_refused(workload: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        spec(workload)


def test_traffic_weights_may_name_clusters_a_selector_may_choose() -> None:
    raw = {"workloads": [{"clusterSelector": {}, "manifests": [cm()]}],
           "traffic": {"ingressCluster": "ingress", "weights": {"eu1": 1, "later": 2}}}
    assert parse_spec(raw).traffic is not None
    raw["workloads"] = [{"clusters": ["eu1"], "manifests": [cm()]}]
    with pytest.raises(InvalidSpec, match=r"traffic\.weights names clusters in no workload: later"):
        parse_spec(raw)


def test_what_a_stored_spec_depends_on_is_read_without_validation() -> None:
    assert named_clusters({"workloads": [{"clusters": ["a", "b"]}, {"clusters": ["b", 3]}]}) \
        == {"a", "b"}
    assert named_clusters(None) == set()
    assert not follows_labels({"workloads": [{"clusters": ["a"]}]})
    assert follows_labels({"workloads": [{"clusterSelector": {}}]})
    assert follows_labels({"workloads": [{"clusters": ["a"], "overrides": [
        {"clusters": ["a"], "mergePatch": {"x": "${cluster.labels.region}"}}]}]})
    assert not follows_labels({"workloads": [{"clusters": ["a"], "overrides": [
        {"clusters": ["a"], "mergePatch": {"x": "${cluster.name}"}}]}]})
    assert not follows_labels("garbage")


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("region", "eu", None),
    ("topology.kubernetes.io/region", "eu-west-1", None),
    ("gpu", "", None),
    ("Bad_Prefix/x", "v", "key prefix 'Bad_Prefix' must be a DNS subdomain"),
    ("-x", "v", "key name '-x' must be"),
    ("x", "a" * 64, "value"),
    ("x", "spaces here", "value 'spaces here'"),
])
def test_label_keys_and_values_follow_kubernetes(key: str, value: str,
                                                 problem: str | None) -> None:
    found = label_problem(key, value)
    assert (found is None) if problem is None else (found or "").startswith(problem)


# ----- overrides ---------------------------------------------------------------------------
def overridden(*overrides: dict[str, Any], manifests: list[dict[str, Any]] | None = None
               ) -> dict[tuple[str, str], Any]:
    s = spec({"clusters": ["eu1", "us1"], "manifests": manifests or [cm()],
              "overrides": list(overrides)})
    return {(d.cluster, d.ref.name): d for d in render(OWNER, s, FLEET)}


def test_a_merge_patch_with_placeholders_changes_only_the_selected_clusters() -> None:
    out = overridden({"clusterSelector": {"matchLabels": {"region": "us"}},
                      "mergePatch": {"data": {"bucket": "s3://${cluster.labels.region}-models",
                                              "where": "${cluster.name}"}}})
    assert out[("eu1", "cfg")].body["data"] == {"bucket": "s3://models"}
    assert out[("us1", "cfg")].body["data"] == {"bucket": "s3://us-models", "where": "us1"}
    assert out[("eu1", "cfg")].hash != out[("us1", "cfg")].hash
    assert out[("us1", "cfg")].body["metadata"]["labels"]["hmls.tensorstack.dev/owner-uid"] \
        == "uid-1"


def test_overrides_apply_in_order_and_only_to_their_target() -> None:
    out = overridden(
        {"clusters": ["us1"], "target": {"kind": "ConfigMap", "name": "cfg"},
         "jsonPatch": [{"op": "add", "path": "/data/replicas", "value": "2"}]},
        {"clusters": ["us1"], "target": {"kind": "ConfigMap"},
         "mergePatch": {"data": {"replicas": "4"}}},
        {"clusters": ["us1"], "target": {"name": "other"}, "mergePatch": {"data": {"x": "y"}}},
        manifests=[cm(), cm("other", a="b")])
    assert out[("us1", "cfg")].body["data"] == {"bucket": "s3://models", "replicas": "4"}
    assert out[("us1", "other")].body["data"] == {"a": "b", "replicas": "4", "x": "y"}
    assert out[("eu1", "other")].body["data"] == {"a": "b"}


def test_a_failing_override_is_that_items_error_alone() -> None:
    out = overridden(
        {"clusters": ["us1"], "target": {"kind": "ConfigMap", "name": "cfg"},
         "jsonPatch": [{"op": "remove", "path": "/data/nope"}]},
        manifests=[cm(), cm("other", a="b")])
    assert out[("us1", "cfg")].error == ("workloads[0].overrides[0]: operation 0 (remove "
                                         "/data/nope): path does not exist (on "
                                         "workloads[0].manifests[0])")
    assert [k for k, d in out.items() if d.error] == [("us1", "cfg")]


@pytest.mark.parametrize(("patch", "message"), [
    ({"mergePatch": {"metadata": {"name": "renamed"}}}, "must not change apiVersion, kind"),
    ({"mergePatch": {"kind": "Secret"}}, "must not change apiVersion, kind"),
    ({"mergePatch": {"data": {"x": "${cluster.labels.zone}"}}},
     "${cluster.labels.zone} is not defined for cluster us1"),
])
def test_an_override_cannot_change_identity_or_use_unknown_labels(patch: dict[str, Any],
                                                                  message: str) -> None:
    out = overridden({"clusters": ["us1"], **patch})
    assert message in (out[("us1", "cfg")].error or "")
    assert out[("eu1", "cfg")].error is None


def test_render_does_not_mutate_the_spec_with_overrides() -> None:
    s = spec({"clusters": ["eu1", "us1"], "manifests": [cm()], "overrides": [
        {"clusters": ["us1"], "mergePatch": {"data": {"bucket": None, "x": "${cluster.name}"}}}]})
    before = copy.deepcopy(s.model_dump(by_alias=True))
    render(OWNER, s, FLEET)
    assert s.model_dump(by_alias=True) == before


@given(st.dictionaries(st.sampled_from(["region", "gpu", "tier"]),
                       st.sampled_from(["a", "b"]), max_size=3),
       st.dictionaries(st.sampled_from(["region", "gpu", "tier"]),
                       st.sampled_from(["a", "b"]), max_size=3))
def test_match_labels_is_a_subset_test(wanted: dict[str, str], labels: dict[str, str]) -> None:
    sel = LabelSelector.model_validate({"matchLabels": wanted})
    assert sel.matches(labels) == (wanted.items() <= labels.items())
