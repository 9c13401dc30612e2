"""Cluster access policy from Secret annotations."""

from __future__ import annotations

from hmls.domain.access import (
    ALLOW_CLUSTER_SCOPED,
    ALLOW_OTHER_NAMESPACES,
    ALLOWED_NAMESPACES,
    AccessPolicy,
)


def test_defaults_accept_any_namespace_but_only_own_namespaced_objects() -> None:
    p = AccessPolicy.from_annotations(None)
    assert p.refuse_owner("c", "anything") is None
    assert p.refuse_object("c", kind="ConfigMap", namespaced=True, namespace="a",
                           owner_namespace="a") is None
    msg = p.refuse_object("c", kind="ClusterRole", namespaced=False, namespace="a",
                          owner_namespace="a")
    assert msg == (f'ClusterRole is cluster-scoped on cluster c; refused unless the cluster Secret '
                   f'has {ALLOW_CLUSTER_SCOPED}: "true"')
    other = p.refuse_object("c", kind="ConfigMap", namespaced=True, namespace="b",
                            owner_namespace="a")
    assert other is not None and other.startswith("namespace b differs from the HyperMLService's")


def test_annotations_opt_in() -> None:
    p = AccessPolicy.from_annotations({ALLOW_CLUSTER_SCOPED: "true", ALLOW_OTHER_NAMESPACES: "yes",
                                       ALLOWED_NAMESPACES: "team-a, team-b"})
    assert p.refuse_object("c", kind="ClusterRole", namespaced=False, namespace="",
                           owner_namespace="team-a") is None
    assert p.refuse_object("c", kind="ConfigMap", namespaced=True, namespace="x",
                           owner_namespace="team-a") is None
    assert p.refuse_owner("c", "team-b") is None
    assert p.refuse_owner("c", "team-c") == (
        f"cluster c does not accept HyperMLServices from namespace team-c "
        f"(its Secret's {ALLOWED_NAMESPACES}: team-a, team-b)")


def test_star_and_false_values() -> None:
    p = AccessPolicy.from_annotations({ALLOWED_NAMESPACES: "*", ALLOW_CLUSTER_SCOPED: "false"})
    assert p.namespaces is None and p.cluster_scoped is False
