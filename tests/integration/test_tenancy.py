"""A hub namespace gets on a spoke only what the cluster's policy grants, against real API
servers that allow privileged containers (as usual clusters do), so that each refusal here
could fail: a RoleBinding to cluster-admin and a privileged hostPath Pod are refused and never
reach the spoke, while the seed sample next to them is applied and Ready."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.pki import CertificateAuthority, KeyPair
from hmls_devenv.simulator import MLSERVICE

from hmls.domain.access import ALLOW_HOST_ACCESS, ALLOWED_KINDS, DENIED_KINDS, POD_SECURITY
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import Resource
from tests.helpers import (
    cluster_rows,
    create,
    get_hmls,
    hmls_cli,
    hub,
    items,
    join,
    kubectl,
    load_sample,
    wait_condition,
)

Clients = dict[str, ClusterClient]
PODS = Resource("v1", "Pod", "pods", namespaced=True)
ROLEBINDINGS = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings",
                        namespaced=True)


def escalation(ns: str) -> list[Obj]:
    """What the issue's tenant tried: cluster-admin for mallory, root on the node."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "mallory-admin", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "cluster-admin"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "mallory"}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rootshell", "namespace": ns},
         "spec": {"hostPID": True, "hostNetwork": True,
                  "containers": [{"name": "sh", "image": "busybox",
                                  "securityContext": {"privileged": True},
                                  "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                  "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}},
    ]


def sample_with(ns: str, clusters: list[str], extra: list[Obj]) -> Obj:
    obj = load_sample(ns)
    workload = obj["spec"]["workloads"][0]
    workload["clusters"] = clusters
    workload["manifests"] += extra
    return obj


def can_i(env: Environment, cluster: str, ns: str, user: str) -> str:
    res = subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig(cluster)), "auth",
                          "can-i", "*", "*", "-n", ns, "--as", user],
                         capture_output=True, text=True, timeout=30, check=False)
    return res.stdout.strip()


def messages(obj: Obj) -> dict[str, tuple[bool, str]]:
    return {i["resource"]["kind"]: (i["applied"], i["appliedMessage"]) for i in items(obj)}


async def test_rbac_and_host_access_are_refused_and_the_sample_still_runs(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-tenancy-default"
    kubectl(env, "hub", "create", "namespace", ns, check=False)
    try:
        create(env, sample_with(ns, ["spoke1"], escalation(ns)))
        obj = await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied", "False")
        got = messages(obj)
        assert got["RoleBinding"] == (False, (
            "RoleBinding.rbac.authorization.k8s.io is refused on cluster spoke1: hmls would "
            f"grant it with its own credentials; name it in the cluster Secret's {ALLOWED_KINDS}"
            " to allow it"))
        assert got["Pod"] == (False, (
            "Pod asks for host access on cluster spoke1 (hostNetwork: true, hostPID: true, "
            "hostPath volume 'root', privileged container 'sh'); refused unless the cluster "
            f'Secret has {ALLOW_HOST_ACCESS}: "true"'))
        assert all(got[k][0] for k in ("MLServiceRuntime", "Secret", "MLService"))

        async def mlservice_ready() -> bool:
            now = await get_hmls(clients["hub"], ns, "hmls-sample")
            return any(i["resource"]["kind"] == "MLService" and i.get("ready")
                       for i in items(now or {"status": {"aggregatedStatus": []}}))
        await eventually(mlservice_ready, timeout=30, what="the sample's MLService Ready")
        # read back: neither reached the spoke, and mallory has nothing there
        assert await clients["spoke1"].get(ROLEBINDINGS, ns, "mallory-admin") is None
        assert await clients["spoke1"].get(PODS, ns, "rootshell") is None
        assert await clients["spoke1"].get(MLSERVICE, ns, "torch-mnist-s3") is not None
        assert can_i(env, "spoke1", ns, "mallory") == "no"
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s",
                check=False)


async def test_an_operator_opts_in_or_denies_by_kind(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """The same refusals are the policy's: allowed by the operator (host access, and a
    privileged Pod Security level for the namespaces hmls creates), the spoke takes the Pod
    (the servers really allow privileged containers); a deny list refuses a plain Secret."""
    ns, open_, closed = "t-tenancy-policy", "spoke2open", "spoke2closed"
    kubectl(env, "hub", "create", "namespace", ns, check=False)
    assert join(env, open_, env.kubeconfig("spoke2")).returncode == 0
    assert join(env, closed, env.kubeconfig("spoke1")).returncode == 0
    annotate: list[tuple[str, dict[str, Any]]] = [
        (open_, {ALLOW_HOST_ACCESS: "true", POD_SECURITY: "privileged"}),
        (closed, {DENIED_KINDS: "Secret", ALLOWED_KINDS: "*.tensorstack.dev,Secret"})]
    for name, ann in annotate:
        kubectl(env, "hub", "annotate", "secret", "-n", "hmls-system", f"cluster-{name}",
                *[f"{k}={v}" for k, v in ann.items()])
    try:
        pod = escalation(ns)[1]
        create(env, sample_with(ns, [open_, closed], [pod]))
        obj = await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied", "False")
        by = {(i["cluster"], i["resource"]["kind"]): (i["applied"], i["appliedMessage"])
              for i in items(obj)}
        assert by[(open_, "Pod")][0] is True
        assert await clients["spoke2"].get(PODS, ns, "rootshell") is not None
        assert by[(closed, "Secret")] == (False, (
            f"Secret is refused on cluster {closed} by its Secret's {DENIED_KINDS} (Secret)"))
        assert by[(closed, "Pod")] == (False, (
            f"Pod is not among the kinds cluster {closed} accepts (its Secret's {ALLOWED_KINDS}: "
            "*.tensorstack.dev, Secret)"))
        assert by[(closed, "MLService")][0] is True
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s",
                check=False)
        for name in (open_, closed):
            hmls_cli("cluster", "unjoin", name, "--force", *hub(env), check=False)


# ----- join mints an identity; tenant mode ------------------------------------------------------
def exec_kubeconfig(env: Environment, tmp_path: Path, spoke: str = "spoke1") -> Path:
    """A kubeconfig whose user is an exec plugin (as EKS, GKE or kubelogin give), here a script
    that prints an ExecCredential with the admin client certificate."""
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"clientCertificateData": (env.pki / "admin.crt").read_text(),
                             "clientKeyData": (env.pki / "admin.key").read_text()}}
    script = tmp_path / "exec-plugin"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps(credential) + "\nEOF\n")
    script.chmod(0o755)
    cfg = yaml.safe_load(env.kubeconfig(spoke).read_text())
    cfg["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                        "command": str(script), "interactiveMode": "Never"}}
    path = tmp_path / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


def stored(env: Environment, cluster: str) -> tuple[Obj, dict[str, str]]:
    secret = json.loads(kubectl(env, "hub", "get", "secret", "-n", "hmls-system",
                                f"cluster-{cluster}", "-o", "json").stdout)
    return (yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"])),
            secret["metadata"].get("annotations") or {})


def can(env: Environment, cluster: str, who: str, *args: str) -> str:
    res = subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig(cluster)), "auth",
                          "can-i", *args, "--as", who],
                         capture_output=True, text=True, timeout=30, check=False)
    return res.stdout.strip()


async def test_join_mints_a_tenant_identity_and_the_spoke_decides_what_a_tenant_gets(
        env: Environment, clients: Clients, controller: Controller, tmp_path: Path) -> None:
    name, ns, other = "tenant1", "t-tenant-seed", "t-tenant-other"
    sa = f"system:serviceaccount:hmls-system:hmls-{name}"
    operator = exec_kubeconfig(env, tmp_path)
    try:
        res = hmls_cli("cluster", "join", name, *hub(env), "--cluster-kubeconfig", str(operator))
        assert res.stdout.startswith(f"cluster {name} joined (v1.34.4, tenant); Secret "
                                     f"hmls-system/cluster-{name} written (ServiceAccount "
                                     f"hmls-system/hmls-{name}, token valid until "), res.stdout
        cfg, annotations = stored(env, name)
        assert set(cfg["users"][0]["user"]) == {"token"}  # no exec plugin, no certificate
        assert annotations == {"hmls.tensorstack.dev/tenancy": "tenant",
                               "hmls.tensorstack.dev/identity": f"hmls-system/hmls-{name}"}
        listed = hmls_cli("cluster", "list", *hub(env)).stdout
        assert cluster_rows(env)[name]["MODE"] == "tenant"
        assert cluster_rows(env)["spoke1"]["MODE"] == "trusted"  # joined as-is by the session
        assert "warning: trusted clusters (" in listed and name not in listed.split("warning")[1]
        # exactly what hmls needs on the spoke, and no more
        assert can(env, "spoke1", sa, "list", "secrets", "-A") == "yes"
        assert can(env, "spoke1", sa, "create", "namespaces") == "yes"
        assert can(env, "spoke1", sa, "impersonate", "serviceaccounts/hmls-tenant", "-n", ns) \
            == "yes"
        for denied in (("patch", "mlservices", "-n", ns), ("create", "clusterrolebindings"),
                       ("impersonate", "serviceaccounts/default", "-n", ns),
                       ("delete", "namespaces"), ("*", "*", "-n", ns)):
            assert can(env, "spoke1", sa, *denied) == "no", denied

        # the seed's flow (hub namespace only) works as the tenant; the escalation beside it,
        # in the same namespace, is refused by the spoke
        kubectl(env, "hub", "create", "namespace", ns, check=False)
        create(env, sample_with(ns, [name], []))
        mallory = sample_with(ns, [name], escalation(ns))
        mallory["metadata"]["name"] = "mallory"
        mallory["spec"]["workloads"][0]["manifests"] = escalation(ns)
        create(env, mallory)
        await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied")
        await wait_condition(clients["hub"], ns, "hmls-sample", "Ready", timeout=30)
        obj = await wait_condition(clients["hub"], ns, "mallory", "FullyApplied", "False")
        got = messages(obj)
        assert got["RoleBinding"][1].startswith(f"forbidden by cluster {name}: ")
        assert "is attempting to grant RBAC permissions not currently held" in \
            got["RoleBinding"][1]
        assert got["Pod"][1].startswith(f"forbidden by cluster {name}: ")
        assert 'violates PodSecurity "baseline:latest"' in got["Pod"][1]
        assert await clients["spoke1"].get(ROLEBINDINGS, ns, "mallory-admin") is None
        assert await clients["spoke1"].get(PODS, ns, "rootshell") is None
        assert can_i(env, "spoke1", ns, "mallory") == "no"
        made = json.loads(kubectl(env, "spoke1", "get", "namespace", ns, "-o", "json").stdout)
        assert made["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
        assert kubectl(env, "spoke1", "get", "rolebinding", "-n", ns, "hmls-tenant",
                       check=False).returncode == 0

        # another hub namespace cannot touch the first one's objects, even where the cluster
        # lets manifests name other namespaces: the spoke refuses its tenant
        kubectl(env, "hub", "annotate", "secret", "-n", "hmls-system", f"cluster-{name}",
                "hmls.tensorstack.dev/allow-other-namespaces=true")
        kubectl(env, "hub", "create", "namespace", other, check=False)
        intruder = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "intruder", "namespace": ns}, "data": {"k": "v"}}
        create(env, sample_with(other, [name], [intruder]))
        obj = await wait_condition(clients["hub"], other, "hmls-sample", "FullyApplied",
                                   "False")
        message = messages(obj)["ConfigMap"][1]
        assert f'"system:serviceaccount:{other}:hmls-tenant" cannot patch resource ' \
               f'"configmaps"' in message, message
        assert kubectl(env, "spoke1", "get", "configmap", "-n", ns, "intruder",
                       check=False).returncode != 0

        # the token renews itself; unjoin removes what join made on the spoke
        before = cfg["users"][0]["user"]["token"]
        res = hmls_cli("cluster", "rotate", name, *hub(env))
        assert res.stdout.startswith(f"cluster {name}: token renewed, valid until ")
        assert stored(env, name)[0]["users"][0]["user"]["token"] != before
    finally:
        for n, cr in ((ns, "hmls-sample"), (ns, "mallory"), (other, "hmls-sample")):
            kubectl(env, "hub", "delete", "hmls", "-n", n, cr, "--timeout=30s", check=False)
        res = hmls_cli("cluster", "unjoin", name, "--force", *hub(env), "--cluster-kubeconfig",
                       str(operator), check=False)
    assert res.stdout == (f"cluster {name} unjoined; removed ServiceAccount hmls-{name}, "
                          f"ClusterRoleBinding hmls-{name}, Role hmls-{name}-token, "
                          f"RoleBinding hmls-{name}-token from the cluster\n"), res
    assert kubectl(env, "spoke1", "get", "serviceaccount", "-n", "hmls-system", f"hmls-{name}",
                   check=False).returncode != 0


async def test_a_namespace_the_spokes_owner_made_waits_for_a_grant(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """The usual case: the platform team made the namespace (quotas, policies) before hmls came.
    Every item is refused there, says which command the owner runs, and `cluster list` counts
    them; after `hmls cluster grant` they are applied, and `--revoke` takes the grant away."""
    name, ns = "tenant2", "t-tenant-owned"
    owner = str(env.kubeconfig("spoke2"))
    user = f"system:serviceaccount:{ns}:hmls-tenant"
    kubectl(env, "spoke2", "create", "namespace", ns)  # the spoke's owner made it
    kubectl(env, "hub", "create", "namespace", ns, check=False)
    try:
        hmls_cli("cluster", "join", name, *hub(env), "--cluster-kubeconfig", owner)
        create(env, sample_with(ns, [name], []))
        obj = await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied", "False")
        hint = (f"namespace {ns} on cluster {name} was not made by hmls, so {user} may not "
                f"write there until the cluster's owner grants it: hmls cluster grant {name} "
                f"--namespace {ns} --cluster-kubeconfig <the owner's kubeconfig of {name}>")
        got = messages(obj)
        assert sorted(got) == ["MLService", "MLServiceRuntime", "Secret"]
        for applied, message in got.values():
            assert not applied and message.startswith(f"forbidden by cluster {name}: ")
            assert message.endswith(f"; {hint}"), message
        rows = cluster_rows(env)
        assert (rows[name]["AWAITING GRANT"], rows["spoke1"]["AWAITING GRANT"]) == ("3", "-")

        res = hmls_cli("cluster", "grant", name, "--namespace", ns, "--cluster-kubeconfig", owner)
        assert res.stdout == (f"granted on cluster {name}: ServiceAccount {ns}/hmls-tenant, "
                              f"RoleBinding {ns}/hmls-tenant; HyperMLServices of hub namespace "
                              f"{ns} write there as {user}, with what the ClusterRole hmls-tenant"
                              " allows\n"), res.stdout
        assert can(env, "spoke2", user, "patch", "mlservices.tensorstack.dev", "-n", ns) == "yes"
        # the next retry applies them (a change of the HyperMLService makes it come at once)
        kubectl(env, "hub", "annotate", "hmls", "-n", ns, "hmls-sample", "granted=now")
        await wait_condition(clients["hub"], ns, "hmls-sample", "FullyApplied")
        assert cluster_rows(env)[name]["AWAITING GRANT"] == "0"
        # deleting it cleans up as the tenant, which the grant allows
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s")
        assert await clients["spoke2"].get(MLSERVICE, ns, "torch-mnist-s3") is None

        res = hmls_cli("cluster", "grant", name, "--namespace", ns, "--cluster-kubeconfig", owner,
                       "--revoke")
        assert res.stdout == (f"revoked on cluster {name}: deleted RoleBinding {ns}/hmls-tenant, "
                              f"ServiceAccount {ns}/hmls-tenant\n"), res.stdout
        assert can(env, "spoke2", user, "patch", "mlservices.tensorstack.dev", "-n", ns) == "no"
        # bad input: a namespace the owner has not made; hmls's own namespaces need none
        res = hmls_cli("cluster", "grant", name, "--namespace", "t-nowhere",
                       "--cluster-kubeconfig", owner, check=False)
        assert res.returncode == 1 and res.stderr == (
            f"hmls cluster grant: namespace t-nowhere does not exist on cluster {name}: hmls "
            "creates a missing namespace itself, and lets the tenant write there; grant is for "
            "namespaces the cluster's owner made\n"), res.stderr
    finally:
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "hmls-sample", "--timeout=30s",
                check=False)
        hmls_cli("cluster", "unjoin", name, "--force", *hub(env), "--cluster-kubeconfig", owner,
                 check=False)


def test_tenant_mode_needs_credentials_that_may_impersonate(
        env: Environment, tmp_path: Path) -> None:
    ca = CertificateAuthority.create(env.pki)
    pair = ca.client(KeyPair(tmp_path / "plain.crt", tmp_path / "plain.key"), user="plain")
    cfg = yaml.safe_load(env.kubeconfig("spoke1").read_text())
    cfg["users"][0]["user"] = {
        "client-certificate-data": base64.b64encode(pair.cert_pem()).decode(),
        "client-key-data": base64.b64encode(pair.key_pem()).decode()}
    path = tmp_path / "plain.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    res = hmls_cli("cluster", "join", "plainjoin", *hub(env), "--cluster-kubeconfig", str(path),
                   "--kubeconfig-as-is", check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("hmls cluster join: the kubeconfig for plainjoin lacks "
                                 "permissions hmls needs: get, list, watch every kind; ")
    assert "; impersonate serviceaccounts (hmls-tenant); create serviceaccounts; " in res.stderr
    res = hmls_cli("cluster", "join", "plainjoin", *hub(env), "--cluster-kubeconfig", str(path),
                   check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("hmls cluster join: could not make hmls's identity on cluster "
                                 "plainjoin at ")
    assert "forbidden" in res.stderr
