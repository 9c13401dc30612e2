"""Cluster access policy from Secret annotations."""

from __future__ import annotations

from typing import Any

from hmls.domain.access import (
    ALLOW_CLUSTER_SCOPED,
    ALLOW_HOST_ACCESS,
    ALLOW_OTHER_NAMESPACES,
    ALLOWED_KINDS,
    ALLOWED_NAMESPACES,
    AWAITS_GRANT,
    DENIED_KINDS,
    AccessPolicy,
    grant_hint,
    host_access,
    tenant_grant,
    tenant_of,
    tenant_user,
)


def test_defaults_accept_any_namespace_but_only_own_namespaced_objects() -> None:
    p = AccessPolicy.from_annotations(None)
    assert p.refuse_owner("c", "anything") is None
    assert p.refuse_object("c", api_version="v1", kind="ConfigMap", namespaced=True, namespace="a",
                           owner_namespace="a") is None
    msg = p.refuse_object("c", api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole",
                           namespaced=False, namespace="a",
                          owner_namespace="a")
    assert msg == (f'ClusterRole is cluster-scoped on cluster c; refused unless the cluster Secret '
                   f'has {ALLOW_CLUSTER_SCOPED}: "true"')
    other = p.refuse_object("c", api_version="v1", kind="ConfigMap", namespaced=True, namespace="b",
                            owner_namespace="a")
    assert other is not None and other.startswith("namespace b differs from the HyperMLService's")


def test_annotations_opt_in() -> None:
    p = AccessPolicy.from_annotations({ALLOW_CLUSTER_SCOPED: "true", ALLOW_OTHER_NAMESPACES: "yes",
                                       ALLOWED_NAMESPACES: "team-a, team-b"})
    assert p.refuse_object("c", api_version="scheduling.k8s.io/v1", kind="PriorityClass",
                           namespaced=False, namespace="", owner_namespace="team-a") is None
    assert p.refuse_object("c", api_version="v1", kind="ConfigMap", namespaced=True, namespace="x",
                           owner_namespace="team-a") is None
    assert p.refuse_owner("c", "team-b") is None
    assert p.refuse_owner("c", "team-c") == (
        f"cluster c does not accept HyperMLServices from namespace team-c "
        f"(its Secret's {ALLOWED_NAMESPACES}: team-a, team-b)")


def test_star_and_false_values() -> None:
    p = AccessPolicy.from_annotations({ALLOWED_NAMESPACES: "*", ALLOW_CLUSTER_SCOPED: "false"})
    assert p.namespaces is None and p.cluster_scoped is False


def refused(p: AccessPolicy, api_version: str, kind: str, body: dict[str, Any] | None = None
            ) -> str | None:
    return p.refuse_object("c", api_version=api_version, kind=kind, namespaced=True,
                           namespace="a", owner_namespace="a", body=body)


def test_rbac_kinds_are_refused_unless_named() -> None:
    binding = ("rbac.authorization.k8s.io/v1", "RoleBinding")
    assert refused(AccessPolicy.from_annotations(None), *binding) == (
        "RoleBinding.rbac.authorization.k8s.io is refused on cluster c: hmls would grant it "
        f"with its own credentials; name it in the cluster Secret's {ALLOWED_KINDS} to allow it")
    assert refused(AccessPolicy.from_annotations({ALLOWED_KINDS: "*"}), *binding) is not None
    for allowed in ("RoleBinding.rbac.authorization.k8s.io", "*.rbac.authorization.k8s.io"):
        assert refused(AccessPolicy.from_annotations({ALLOWED_KINDS: allowed}), *binding) is None


def test_allow_and_deny_lists_say_which_rule_refused() -> None:
    p = AccessPolicy.from_annotations({ALLOWED_KINDS: "*.tensorstack.dev, Secret, Deployment.apps",
                                       DENIED_KINDS: "MLServiceRuntime.tensorstack.dev"})
    assert refused(p, "tensorstack.dev/v1beta1", "MLService") is None
    assert refused(p, "v1", "Secret") is None
    assert refused(p, "apps/v1", "Deployment") is None
    assert refused(p, "tensorstack.dev/v1beta1", "MLServiceRuntime") == (
        "MLServiceRuntime.tensorstack.dev is refused on cluster c by its Secret's "
        f"{DENIED_KINDS} (MLServiceRuntime.tensorstack.dev)")
    assert refused(p, "v1", "ConfigMap") == (
        f"ConfigMap is not among the kinds cluster c accepts (its Secret's {ALLOWED_KINDS}: "
        "*.tensorstack.dev, Secret, Deployment.apps)")
    assert refused(AccessPolicy.from_annotations({ALLOWED_KINDS: ""}), "v1", "Secret") == (
        f"Secret is not among the kinds cluster c accepts (its Secret's {ALLOWED_KINDS}: "
        "nothing)")
    assert refused(AccessPolicy.from_annotations({DENIED_KINDS: "*"}), "v1", "Secret") is not None


EVIL_POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "evil"},
    "spec": {"hostPID": True, "hostNetwork": True,
             "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True},
                             "ports": [{"containerPort": 80, "hostPort": 80}]}],
             "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}


def test_host_access_is_found_in_pods_and_pod_templates() -> None:
    assert host_access(EVIL_POD) == [
        "hostNetwork: true", "hostPID: true", "hostPath volume 'root'",
        "privileged container 'c'", "hostPort 80 of container 'c'"]
    deployment = {"kind": "Deployment", "spec": {"template": {"spec": EVIL_POD["spec"]}}}
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {
        "spec": {"hostIPC": True, "containers": []}}}}}}
    assert len(host_access(deployment)) == 5
    assert host_access(cron) == ["hostIPC: true"]
    assert host_access({"kind": "Pod", "spec": {"containers": [{"name": "ok"}]}}) == []
    assert host_access({"kind": "MLService", "spec": {"releases": []}}) == []


def test_host_access_is_refused_unless_allowed() -> None:
    msg = refused(AccessPolicy.from_annotations(None), "v1", "Pod", EVIL_POD)
    assert msg is not None and msg.startswith("Pod asks for host access on cluster c (hostNetwork")
    assert msg.endswith(f'refused unless the cluster Secret has {ALLOW_HOST_ACCESS}: "true"')
    assert refused(AccessPolicy.from_annotations({ALLOW_HOST_ACCESS: "true"}), "v1", "Pod",
                   EVIL_POD) is None


def test_tenant_of_inverts_tenant_user_and_nothing_else() -> None:
    assert tenant_of(tenant_user("demo")) == "demo"
    for other in ("system:serviceaccount:demo:default", "system:serviceaccount:demo",
                  "alice", "system:serviceaccount:a:b:hmls-tenant"):
        assert tenant_of(other) is None, other


def test_the_grant_binds_the_namespaces_tenant_to_the_tenant_role() -> None:
    sa, binding = tenant_grant("demo", {"x": "y"})
    assert (sa["kind"], sa["metadata"]) == (
        "ServiceAccount", {"name": "hmls-tenant", "namespace": "demo", "labels": {"x": "y"}})
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "hmls-tenant"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "demo",
                                    "name": "hmls-tenant"}]


def test_the_grant_hint_names_the_command_the_owner_runs() -> None:
    own = grant_hint("spoke1", "demo", "demo")
    assert AWAITS_GRANT in own
    assert own.endswith(": hmls cluster grant spoke1 --namespace demo --cluster-kubeconfig "
                        "<the owner's kubeconfig of spoke1>"), own
    # a manifest in another namespace (allow-other-namespaces): a RoleBinding there
    other = grant_hint("spoke1", "shared", "demo")
    assert AWAITS_GRANT in other
    assert other.endswith(": kubectl create rolebinding hmls-tenant-demo --namespace shared "
                          "--clusterrole=hmls-tenant --serviceaccount=demo:hmls-tenant"), other
