"""Unit tests for hmls.domain.models: spec parsing and the Owner value."""

from __future__ import annotations

from typing import Any

import pytest

from hmls.domain.models import InvalidSpec, Owner, deletion_policy, parse_spec

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}


def workload(clusters: list[str], manifests: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    return {"clusters": clusters, "manifests": manifests if manifests is not None else [CM]}


def invalid(raw: Any) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(raw)
    return str(info.value)


def test_valid_spec_is_parsed() -> None:
    spec = parse_spec({"workloads": [workload(["a", "b"]), workload(["c"], [CM, CM])]})
    assert [w.clusters for w in spec.workloads] == [["a", "b"], ["c"]]
    assert spec.workloads[0].manifests == [CM]
    assert len(spec.workloads[1].manifests) == 2


def test_unknown_fields_are_ignored() -> None:
    spec = parse_spec({"workloads": [{**workload(["a"]), "future": 1}], "extra": True})
    assert spec.workloads[0].clusters == ["a"]


def test_duplicate_clusters_message_names_each_duplicate_once() -> None:
    msg = invalid({"workloads": [workload(["b", "a", "c", "a", "b", "a"])]})
    assert msg.startswith("spec.workloads.0.clusters: ")
    assert msg.endswith("cluster names in a workload must be unique: a, b")
    assert "c" not in msg.split("unique:")[1]


def test_duplicate_clusters_location_points_at_the_workload() -> None:
    msg = invalid({"workloads": [workload(["a"]), workload(["x", "x"])]})
    assert msg.startswith("spec.workloads.1.clusters: ")
    assert msg.endswith("must be unique: x")


def test_same_cluster_in_different_workloads_is_allowed() -> None:
    spec = parse_spec({"workloads": [workload(["a"]), workload(["a"])]})
    assert len(spec.workloads) == 2


def test_empty_workloads_is_invalid() -> None:
    msg = invalid({"workloads": []})
    assert msg.startswith("spec.workloads: ")
    assert "at least 1 item" in msg


@pytest.mark.parametrize("raw", [None, {}])
def test_missing_workloads_is_invalid(raw: Any) -> None:
    assert invalid(raw) == "spec.workloads: Field required"


def test_empty_manifests_and_workloads_without_clusters_are_invalid_and_all_reported() -> None:
    msg = invalid({"workloads": [{"clusters": ["a"], "manifests": []},
                                 {"clusters": [], "manifests": [{"kind": "ConfigMap"}]}]})
    parts = msg.split("; ")
    assert len(parts) == 2
    assert parts[0].startswith("spec.workloads.0.manifests: ")
    assert "at least 1 item" in parts[0]
    assert parts[1] == ("spec.workloads.1: Value error, a workload needs clusters or "
                        "clusterSelector")


def test_deletion_policy_defaults_to_delete() -> None:
    assert parse_spec({"workloads": [workload(["a"])]}).deletion_policy == "Delete"


@pytest.mark.parametrize("key", ["deletionPolicy", "deletion_policy"])
def test_deletion_policy_alias_and_field_name(key: str) -> None:
    spec = parse_spec({"workloads": [workload(["a"])], key: "Orphan"})
    assert spec.deletion_policy == "Orphan"


def test_the_finalizer_reads_the_deletion_policy_of_an_invalid_spec() -> None:
    broken = {"workloads": [], "deletionPolicy": "Orphan"}
    invalid(broken)
    assert deletion_policy(broken) == "Orphan"
    assert deletion_policy({"workloads": "not a list"}) == "Delete"
    assert deletion_policy(None) == "Delete"
    assert deletion_policy({"deletionPolicy": "orphan"}) == "Delete"  # the CRD's enum refuses it


def test_bad_deletion_policy_is_reported_under_its_wire_name() -> None:
    msg = invalid({"workloads": [workload(["a"])], "deletionPolicy": "Keep"})
    assert msg.startswith("spec.deletionPolicy: ")
    assert "'Delete'" in msg and "'Orphan'" in msg


def test_invalid_spec_is_a_value_error_without_pydantic_chain() -> None:
    with pytest.raises(ValueError) as info:
        parse_spec({"workloads": "nope"})
    assert isinstance(info.value, InvalidSpec)
    assert info.value.__cause__ is None


def test_owner_of_object_and_key() -> None:
    obj = {"metadata": {"namespace": "demo", "name": "svc", "uid": "1234", "labels": {}}}
    owner = Owner.of(obj)
    assert owner == Owner("demo", "svc", "1234")
    assert owner.key == "demo/svc"


def test_owner_is_hashable_and_frozen() -> None:
    owner = Owner("a", "b", "c")
    assert {owner: 1}[Owner("a", "b", "c")] == 1
    with pytest.raises(AttributeError):
        owner.name = "x"  # type: ignore[misc]
