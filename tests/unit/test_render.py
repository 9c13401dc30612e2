"""Unit tests for hmls.domain.render: desired objects, order, labels and hashes."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmls.domain.models import (
    HASH_ANNOTATION,
    OWNER_NAME,
    OWNER_NAMESPACE,
    OWNER_UID,
    Owner,
    parse_spec,
)
from hmls.domain.render import (
    LAST_RANK,
    Desired,
    ResourceRef,
    apply_order,
    content_hash,
    label_value,
    render,
)

OWNER = Owner("demo", "hmls-sample", "uid-1")


def obj(kind: str, name: str, api_version: str = "v1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, **meta}}


def rendered(*workloads: tuple[list[str], list[dict[str, Any]]],
             owner: Owner = OWNER) -> list[Desired]:
    spec = parse_spec({"workloads": [{"clusters": c, "manifests": m} for c, m in workloads]})
    return render(owner, spec, {})


def one(manifest: dict[str, Any]) -> Desired:
    out = rendered((["a"], [manifest]))
    assert len(out) == 1
    return out[0]


# ----- namespace defaulting --------------------------------------------------------------


def test_namespaced_kind_gets_owner_namespace() -> None:
    d = one(obj("ConfigMap", "cm"))
    assert d.body["metadata"]["namespace"] == "demo"
    assert d.ref == ResourceRef("v1", "ConfigMap", "demo", "cm")


def test_explicit_namespace_is_kept() -> None:
    d = one(obj("Secret", "s", namespace="elsewhere"))
    assert d.body["metadata"]["namespace"] == "elsewhere"
    assert d.ref.namespace == "elsewhere"


def test_empty_namespace_is_defaulted() -> None:
    assert one(obj("Secret", "s", namespace="")).ref.namespace == "demo"


def test_unknown_custom_kind_is_treated_as_namespaced() -> None:
    d = one(obj("MLService", "svc", "tensorstack.dev/v1beta1"))
    assert d.ref == ResourceRef("tensorstack.dev/v1beta1", "MLService", "demo", "svc")


@pytest.mark.parametrize(("kind", "api_version"), [
    ("Namespace", "v1"),
    ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
    ("StorageClass", "storage.k8s.io/v1"),
])
def test_cluster_scoped_kind_gets_no_namespace(kind: str, api_version: str) -> None:
    d = one(obj(kind, "x", api_version))
    assert "namespace" not in d.body["metadata"]
    assert d.ref.namespace == ""
    assert d.ref.to_status() == {"apiVersion": api_version, "kind": kind, "name": "x"}


# ----- labels, annotations, server-owned fields --------------------------------------------


def test_owner_labels_added_and_user_labels_kept() -> None:
    d = one(obj("Secret", "s", labels={"app": "web", "tensorstack.dev/resource": "s3"}))
    assert d.body["metadata"]["labels"] == {
        "app": "web",
        "tensorstack.dev/resource": "s3",
        OWNER_NAMESPACE: "demo",
        OWNER_NAME: "hmls-sample",
        OWNER_UID: "uid-1",
    }


def test_owner_labels_override_user_supplied_owner_labels() -> None:
    d = one(obj("Secret", "s", labels={OWNER_UID: "forged"}))
    assert d.body["metadata"]["labels"][OWNER_UID] == "uid-1"


def test_null_labels_and_annotations_are_tolerated() -> None:
    d = one(obj("Secret", "s", labels=None, annotations=None))
    assert d.body["metadata"]["labels"][OWNER_NAME] == "hmls-sample"
    assert d.body["metadata"]["annotations"] == {HASH_ANNOTATION: d.hash}


def test_long_owner_name_label_is_shortened() -> None:
    owner = Owner("demo", "n" * 100, "uid")
    d = rendered((["a"], [obj("Secret", "s")]), owner=owner)[0]
    value = d.body["metadata"]["labels"][OWNER_NAME]
    assert len(value) <= 63
    assert value == label_value("n" * 100)


def test_server_owned_metadata_and_status_are_stripped() -> None:
    manifest = obj("ConfigMap", "cm", resourceVersion="42", uid="abc",
                   creationTimestamp="2024-01-01T00:00:00Z", generation=3,
                   managedFields=[{"manager": "kubectl"}], selfLink="/api/x",
                   deletionTimestamp="2024-01-02T00:00:00Z", finalizers=["keep/me"])
    manifest["status"] = {"phase": "Active"}
    manifest["data"] = {"k": "v"}
    d = one(manifest)
    meta = d.body["metadata"]
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                "selfLink", "deletionTimestamp"):
        assert key not in meta, key
    assert "status" not in d.body
    assert meta["finalizers"] == ["keep/me"]
    assert d.body["data"] == {"k": "v"}


def test_user_annotations_kept_and_hash_annotation_added() -> None:
    d = one(obj("ConfigMap", "cm", annotations={"note": "hi"}))
    annotations = d.body["metadata"]["annotations"]
    assert annotations["note"] == "hi"
    assert re.fullmatch(r"[0-9a-f]{16}", d.hash)
    assert annotations[HASH_ANNOTATION] == d.hash


def test_render_does_not_mutate_the_spec() -> None:
    manifest = obj("ConfigMap", "cm", resourceVersion="1", labels={"a": "b"})
    manifest["status"] = {"x": 1}
    spec = parse_spec({"workloads": [{"clusters": ["a", "b"], "manifests": [manifest]}]})
    before = copy.deepcopy(spec.workloads[0].manifests)
    render(OWNER, spec, {})
    assert spec.workloads[0].manifests == before


# ----- hash ------------------------------------------------------------------------------


def test_hash_is_stable_across_calls() -> None:
    m = obj("ConfigMap", "cm", labels={"b": "2", "a": "1"})
    m["data"] = {"z": "1", "y": "2"}
    assert one(m).hash == one(copy.deepcopy(m)).hash
    assert one(m).body == one(m).body


def test_hash_does_not_depend_on_key_order() -> None:
    m1 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
          "data": {"a": "1", "b": "2"}}
    m2 = {"data": {"b": "2", "a": "1"}, "metadata": {"name": "cm"}, "kind": "ConfigMap",
          "apiVersion": "v1"}
    assert one(m1).hash == one(m2).hash


def test_hash_ignores_server_owned_fields() -> None:
    plain = obj("ConfigMap", "cm")
    live = obj("ConfigMap", "cm", resourceVersion="9", uid="u")
    live["status"] = {"a": 1}
    assert one(plain).hash == one(live).hash


def test_hash_changes_when_manifest_changes() -> None:
    m = obj("ConfigMap", "cm")
    m["data"] = {"k": "v1"}
    changed = copy.deepcopy(m)
    changed["data"]["k"] = "v2"
    labelled = obj("ConfigMap", "cm", labels={"x": "y"})
    labelled["data"] = {"k": "v1"}
    hashes = {one(m).hash, one(changed).hash, one(labelled).hash}
    assert len(hashes) == 3


def test_hash_is_the_content_hash_of_the_body_without_the_hash_annotation() -> None:
    d = one(obj("ConfigMap", "cm"))
    body = copy.deepcopy(d.body)
    del body["metadata"]["annotations"][HASH_ANNOTATION]
    assert content_hash(body) == d.hash


def test_same_manifest_on_two_clusters_has_same_hash_and_body() -> None:
    a, b = rendered((["a", "b"], [obj("ConfigMap", "cm")]))
    assert (a.cluster, b.cluster) == ("a", "b")
    assert a.hash == b.hash
    assert a.body == b.body


def test_content_hash_properties() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert content_hash({"a": [1, 2]}) != content_hash({"a": [2, 1]})
    assert len(content_hash({})) == 16


# ----- order, duplicates, ranks ----------------------------------------------------------


def test_order_is_workload_then_cluster_then_manifest() -> None:
    out = rendered(
        (["s1", "s2"], [obj("ConfigMap", "m0"), obj("Secret", "m1")]),
        (["s3"], [obj("ConfigMap", "m2")]),
    )
    assert [(d.cluster, d.ref.name) for d in out] == [
        ("s1", "m0"), ("s1", "m1"), ("s2", "m0"), ("s2", "m1"), ("s3", "m2")]
    assert all(d.error is None for d in out)


def test_duplicate_within_a_cluster_is_an_error_naming_both_positions() -> None:
    out = rendered(
        (["a"], [obj("ConfigMap", "cm")]),
        (["b", "a"], [obj("Secret", "s"), obj("ConfigMap", "cm", namespace="demo")]),
    )
    assert len(out) == 5
    errors = [d for d in out if d.error]
    assert len(errors) == 1
    dup = errors[0]
    assert dup.cluster == "a"
    assert dup.error == ("workloads[1].manifests[1] duplicates workloads[0].manifests[0] "
                         "for cluster a")
    # the first occurrence and the same object on another cluster are fine
    assert out[0].error is None
    assert [d.error for d in out if d.cluster == "b"] == [None, None]


def test_same_name_different_kind_or_namespace_is_not_a_duplicate() -> None:
    out = rendered((["a"], [obj("ConfigMap", "x"), obj("Secret", "x"),
                            obj("ConfigMap", "x", namespace="other")]))
    assert [d.error for d in out] == [None, None, None]


def test_duplicate_within_one_workload() -> None:
    out = rendered((["a"], [obj("ConfigMap", "x"), obj("ConfigMap", "x")]))
    assert out[0].error is None
    assert out[1].error == ("workloads[0].manifests[1] duplicates workloads[0].manifests[0] "
                            "for cluster a")


def test_manifest_without_name_is_an_error() -> None:
    out = rendered((["a"], [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
                            {"apiVersion": "v1", "kind": "ConfigMap"}]))
    assert [d.error for d in out] == ["workloads[0].manifests[0] has no metadata.name",
                                      "workloads[0].manifests[1] has no metadata.name"]


def test_null_metadata_is_an_error_not_a_crash() -> None:
    out = rendered((["a"], [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": None}]))
    assert out[0].error == "workloads[0].manifests[0] has no metadata.name"


@pytest.mark.parametrize(("kind", "rank"), [
    ("Namespace", 0), ("CustomResourceDefinition", 0),
    ("Secret", 1), ("ConfigMap", 1), ("ServiceAccount", 1),
    ("MLServiceRuntime", 2),
    ("MLService", LAST_RANK), ("Deployment", LAST_RANK), ("Service", LAST_RANK),
])
def test_rank_by_kind(kind: str, rank: int) -> None:
    assert one(obj(kind, "x")).rank == rank


def test_apply_order_groups_by_rank_keeping_spec_order_within_group() -> None:
    manifests = [
        obj("MLService", "svc", "tensorstack.dev/v1beta1"),
        obj("Deployment", "dep", "apps/v1"),
        obj("MLServiceRuntime", "rt", "tensorstack.dev/v1beta1"),
        obj("Secret", "sec"),
        obj("ConfigMap", "cm"),
        obj("CustomResourceDefinition", "crd", "apiextensions.k8s.io/v1"),
        obj("ServiceAccount", "sa"),
        obj("Namespace", "ns"),
    ]
    groups = apply_order(rendered((["a"], manifests)))
    assert [[d.ref.kind for d in g] for g in groups] == [
        ["CustomResourceDefinition", "Namespace"],
        ["Secret", "ConfigMap", "ServiceAccount"],
        ["MLServiceRuntime"],
        ["MLService", "Deployment"],
    ]


def test_apply_order_skips_empty_ranks_and_handles_empty_input() -> None:
    groups = apply_order(rendered((["a"], [obj("MLService", "s"), obj("Namespace", "n")])))
    assert [[d.ref.kind for d in g] for g in groups] == [["Namespace"], ["MLService"]]
    assert apply_order([]) == []


# ----- ResourceRef -----------------------------------------------------------------------


def test_resource_ref_status_round_trip_and_str() -> None:
    ref = ResourceRef("apps/v1", "Deployment", "demo", "web")
    assert ref.to_status() == {"apiVersion": "apps/v1", "kind": "Deployment",
                               "namespace": "demo", "name": "web"}
    assert ResourceRef.from_status(ref.to_status()) == ref
    assert str(ref) == "Deployment demo/web"
    cluster_scoped = ResourceRef("v1", "Namespace", "", "demo")
    assert ResourceRef.from_status(cluster_scoped.to_status()) == cluster_scoped
    assert str(cluster_scoped) == "Namespace demo"


# ----- label_value -----------------------------------------------------------------------

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# DNS-subdomain-like object names (what Owner.name can be), up to 253 characters
names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?", fullmatch=True)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def test_label_value_short_names_unchanged() -> None:
    assert label_value("") == ""
    assert label_value("a" * 63) == "a" * 63


def test_label_value_long_name_keeps_prefix() -> None:
    value = label_value("a" * 64)
    assert len(value) == 63
    assert value.startswith("a" * 52 + "-")
    assert re.fullmatch(r"a{52}-[0-9a-f]{10}", value)


def test_label_value_trims_separators_before_the_digest() -> None:
    value = label_value("a" * 49 + "-._" + "b" * 20)
    assert re.fullmatch(r"a{49}-[0-9a-f]{10}", value)


def test_label_value_distinguishes_names_sharing_a_long_prefix() -> None:
    base = "x" * 70
    assert label_value(base + "1") != label_value(base + "2")


@given(names)
def test_label_value_is_valid_and_short(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63
    assert LABEL_VALUE.fullmatch(value)
    if len(name) <= 63:
        assert value == name
    else:
        assert value[:10] == name[:10]


@settings(max_examples=60)
@given(st.text(alphabet=_ALNUM, min_size=63, max_size=120),
       st.lists(st.text(alphabet=_ALNUM, min_size=1, max_size=40), min_size=2, max_size=5,
                unique=True))
def test_label_value_is_unique_for_different_long_names(prefix: str, tails: list[str]) -> None:
    # the names share their first 63+ characters, so only the digest can tell them apart
    batch = [prefix + tail for tail in tails]
    values = [label_value(n) for n in batch]
    assert len(set(values)) == len(values)
    assert all(len(v) <= 63 for v in values)
    assert values == [label_value(n) for n in batch]  # deterministic


# ----- Secret stringData -----------------------------------------------------------------


def test_secret_string_data_is_applied_as_the_data_the_server_stores() -> None:
    body = one({**obj("Secret", "s3"), "data": {"old": "b2xk", "both": "eA=="},
                "stringData": {".s3cfg": "host_base = x\n", "both": "y"}}).body
    assert "stringData" not in body
    assert body["data"] == {"old": "b2xk", "both": "eQ==", ".s3cfg": "aG9zdF9iYXNlID0geAo="}


def test_secret_string_data_that_is_not_strings_is_left_for_the_server() -> None:
    body = one({**obj("Secret", "s3"), "stringData": {"n": 1}}).body
    assert body["stringData"] == {"n": 1} and "data" not in body
