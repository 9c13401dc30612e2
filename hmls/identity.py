"""hmls's own identity on a spoke, minted by ``hmls cluster join`` with the operator's
credentials (which are used for that and never stored).

On the spoke, in namespace ``hmls-system``:

- a ServiceAccount ``hmls-<cluster>`` per registration (so two hubs, or two names for one
  cluster, never share a token), bound by a ClusterRoleBinding of the same name to
- the ClusterRole ``hmls-controller-tenant`` or ``hmls-controller-trusted``: what hmls does
  there in that mode (``hmls.permissions.spoke``), and a Role that lets the ServiceAccount renew its own token
  (``hmls cluster rotate``);
- the ClusterRole ``hmls-tenant``: what a hub namespace's tenant ServiceAccount may do in the
  namespaces hmls creates for it (tenant mode), and, after ``hmls cluster grant`` (``grant``,
  ``revoke``), in a namespace the cluster's owner made.

The token is a TokenRequest with a bounded lifetime (``TOKEN_SECONDS``): it needs nothing but
the API server (a ServiceAccount token Secret would need the controller-manager's token
controller) and expires on its own if the hub Secret leaks.  Renew it with ``hmls cluster
rotate`` before it expires.  What is stored on the hub is a token + CA kubeconfig, which the
controller's kubeconfig allow-list accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

from hmls import permissions
from hmls.domain.access import TENANT_ROLE, TENANT_SERVICE_ACCOUNT, tenant_grant
from hmls.domain.models import timestamp
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import CLUSTER_ROLES, NAMESPACES, ROLE_BINDINGS, SERVICE_ACCOUNTS

NAMESPACE = "hmls-system"
MANAGER = "hmls-cli"
TOKEN_SECONDS = 90 * 24 * 3600
RBAC = "rbac.authorization.k8s.io/v1"

def service_account(cluster: str) -> str:
    return f"hmls-{cluster}"


def objects(cluster: str, *, tenant: bool) -> list[Obj]:
    """Everything join applies on the spoke, in order."""
    sa = service_account(cluster)
    role = f"hmls-controller-{'tenant' if tenant else 'trusted'}"
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    labels = {"app.kubernetes.io/managed-by": MANAGER}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": sa, "namespace": NAMESPACE, "labels": labels}},
        {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": role, "labels": labels},
         "rules": [r.policy_rule() for r in permissions.spoke(tenant=tenant)]},
        {"apiVersion": RBAC, "kind": "ClusterRole",
         "metadata": {"name": TENANT_ROLE, "labels": labels},
         "rules": [r.policy_rule() for r in permissions.TENANT]},
        {"apiVersion": RBAC, "kind": "ClusterRoleBinding",
         "metadata": {"name": sa, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": role}, "subjects": subject},
        {"apiVersion": RBAC, "kind": "Role",
         "metadata": {"name": f"{sa}-token", "namespace": NAMESPACE, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                    "verbs": ["create"], "resourceNames": [sa]}]},
        {"apiVersion": RBAC, "kind": "RoleBinding",
         "metadata": {"name": f"{sa}-token", "namespace": NAMESPACE, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": f"{sa}-token"}, "subjects": subject},
    ]


async def token(client: ClusterClient, cluster: str) -> tuple[str, str]:
    """A new token for the registration's ServiceAccount: (token, expiry timestamp)."""
    answer = await client.request(
        "POST", SERVICE_ACCOUNTS.path(NAMESPACE, service_account(cluster), "token"),
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": TOKEN_SECONDS}})
    status = answer.get("status") or {}
    if not status.get("token"):
        raise errors.Malformed("the TokenRequest answer has no token")
    expires = str(status.get("expirationTimestamp") or timestamp(
        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=TOKEN_SECONDS)))
    return str(status["token"]), expires


def _ca_data(cluster: Obj) -> str | None:
    if cluster.get("certificate-authority-data"):
        return str(cluster["certificate-authority-data"])
    if cluster.get("certificate-authority"):
        return base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    return None


def token_kubeconfig(operator: Obj, cluster: str, secret: str) -> Obj:
    """The kubeconfig stored on the hub: the operator's server and CA, hmls's own token."""
    entry: dict[str, Any] = {"server": operator["clusters"][0]["cluster"]["server"]}
    ca = _ca_data(operator["clusters"][0]["cluster"])
    if ca:
        entry["certificate-authority-data"] = ca
    if operator["clusters"][0]["cluster"].get("tls-server-name"):
        entry["tls-server-name"] = operator["clusters"][0]["cluster"]["tls-server-name"]
    return {"apiVersion": "v1", "kind": "Config", "current-context": cluster,
            "clusters": [{"name": cluster, "cluster": entry}],
            "users": [{"name": service_account(cluster), "user": {"token": secret}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster,
                                                         "user": service_account(cluster)}}]}


async def install(client: ClusterClient, cluster: str, *, tenant: bool) -> None:
    for body in objects(cluster, tenant=tenant):
        res = NAMESPACES if body["kind"] == "Namespace" else None
        await client.apply(body, field_manager=MANAGER, force=True, resource=res)


async def remove(client: ClusterClient, cluster: str) -> list[str]:
    """Delete this registration's ServiceAccount and bindings (the shared ClusterRoles and the
    namespace stay: other registrations may use them); what was deleted."""
    gone = []
    for body in objects(cluster, tenant=True):
        if body["kind"] in ("Namespace", "ClusterRole"):
            continue
        res = await client.resource(body["apiVersion"], body["kind"])
        meta = body["metadata"]
        if await client.delete(res, meta.get("namespace") if res.namespaced else None,
                               meta["name"]):
            gone.append(f"{body['kind']} {meta['name']}")
    return gone


async def grant(client: ClusterClient, namespace: str) -> list[str]:
    """In a namespace the cluster's owner made: the tenant ServiceAccount and its RoleBinding
    to ``hmls-tenant`` (what hmls makes itself in the namespaces it creates); what was
    applied."""
    if await client.get(CLUSTER_ROLES, None, TENANT_ROLE) is None:
        raise errors.NotFound(f"the ClusterRole {TENANT_ROLE} is missing: join the cluster "
                              "first (hmls cluster join), which installs it")
    done = []
    for body in tenant_grant(namespace, {"app.kubernetes.io/managed-by": MANAGER}):
        await client.apply(body, field_manager=MANAGER, force=True)
        done.append(f"{body['kind']} {namespace}/{TENANT_SERVICE_ACCOUNT}")
    return done


async def revoke(client: ClusterClient, namespace: str) -> list[str]:
    """Take away what ``grant`` made (only objects it labelled); what was deleted."""
    gone = []
    for res in (ROLE_BINDINGS, SERVICE_ACCOUNTS):
        live = await client.get(res, namespace, TENANT_SERVICE_ACCOUNT)
        if live is None:
            continue
        if (live["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != MANAGER:
            raise errors.Conflict(f"{res.kind} {namespace}/{TENANT_SERVICE_ACCOUNT} was not made "
                                  "by hmls cluster grant: left in place")
        if await client.delete(res, namespace, TENANT_SERVICE_ACCOUNT):
            gone.append(f"{res.kind} {namespace}/{TENANT_SERVICE_ACCOUNT}")
    return gone
