"""The one permission table (hmls.permissions) and what reads it: config/rbac on the hub, the
ClusterRoles join mints on a spoke, and the access reviews join asks with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hmls import identity, permissions
from hmls.permissions import Access

REPO = Path(__file__).resolve().parents[2]


def _rules(path: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load((REPO / path).read_text())["rules"]
    return rules


def test_config_rbac_is_the_tables_hub_rules() -> None:
    for path, table in (("config/rbac/cluster_role.yaml", permissions.HUB_CLUSTER),
                        ("config/rbac/role.yaml", permissions.HUB_NAMESPACE)):
        want = [r.policy_rule() for r in table]
        assert _rules(path) == want, (
            f"{path} differs from hmls.permissions; its rules should be:\n"
            + yaml.safe_dump(want, sort_keys=False))


def test_the_minted_cluster_roles_are_the_tables_spoke_rules() -> None:
    for tenant in (False, True):
        objs = identity.objects("spoke1", tenant=tenant)
        roles = {o["metadata"]["name"]: o["rules"] for o in objs if o["kind"] == "ClusterRole"}
        mode = "tenant" if tenant else "trusted"
        assert roles[f"hmls-controller-{mode}"] == [
            r.policy_rule() for r in permissions.spoke(tenant=tenant)]
        assert roles["hmls-tenant"] == [r.policy_rule() for r in permissions.TENANT]


def test_join_checks_every_verb_the_minted_role_grants() -> None:
    trusted = permissions.checks(permissions.spoke(tenant=False))
    assert Access("delete", "apps", "deployments") in trusted
    assert Access("create", "", "namespaces") in trusted
    granted = {(v, rule["apiGroups"][0], res)
               for o in identity.objects("x", tenant=False) if o["kind"] == "ClusterRole"
               and o["metadata"]["name"] == "hmls-controller-trusted"
               for rule in o["rules"] for res in rule["resources"] for v in rule["verbs"]}
    assert {(a.verb, a.group, a.resource) for a in trusted} == granted
    tenant = permissions.checks(permissions.spoke(tenant=True))
    assert Access("impersonate", "", "serviceaccounts", "hmls-tenant") in tenant
    assert Access("bind", "rbac.authorization.k8s.io", "clusterroles", "hmls-tenant") in tenant
    assert Access("watch", "*", "*") in tenant
    # a tenant-mode identity writes nothing with its own name but namespaces and the
    # tenant's identity
    assert {a.resource for a in tenant if a.verb in ("create", "patch", "delete")} == {
        "namespaces", "serviceaccounts", "rolebindings"}


def test_missing_permissions_are_described_per_resource_in_the_tables_order() -> None:
    missing = [Access("patch", "tensorstack.dev", "mlservices"),
               Access("delete", "tensorstack.dev", "mlservices"),
               Access("create", "", "namespaces"), Access("get", "*", "*"),
               Access("impersonate", "", "serviceaccounts", "hmls-tenant")]
    assert permissions.describe(missing) == (
        "patch, delete mlservices.tensorstack.dev; create namespaces; get every kind; "
        "impersonate serviceaccounts (hmls-tenant)")
    assert Access("impersonate", "", "serviceaccounts", "hmls-tenant").attributes() == {
        "verb": "impersonate", "group": "", "resource": "serviceaccounts", "name": "hmls-tenant"}
