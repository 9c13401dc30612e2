"""The ``hmls`` command line against real API servers: ``cluster join`` refusals, ``cluster
list``, ``cluster unjoin``, ``status``, and the Kubernetes Events the controller records.
Every command runs as a subprocess (``python -m hmls``); each test works in its own
namespace and under cluster names of its own."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.pki import CertificateAuthority, KeyPair

from hmls import permissions
from hmls.domain.models import CLUSTER_LABEL
from hmls.kube.client import ClusterClient
from hmls.kube.resources import CONFIGMAPS
from tests.helpers import (
    cluster_rows,
    configmap,
    create,
    delete_leaving_objects,
    described_events,
    get_hmls,
    hmls,
    hmls_cli,
    hub,
    items,
    join,
    kubectl,
    mlservice,
    namespace_everywhere,
    not_registered,
    parse_table,
    replace_spec,
    wait_condition,
)

Clients = dict[str, ClusterClient]
VERSION = "v1.34.4"
STATUS_HEADER = ["CLUSTER", "RESOURCE", "APPLIED", "READY", "URL", "MESSAGE"]
NEEDED = permissions.checks(permissions.spoke(tenant=False))
"""What join checks a trusted registration's credentials for: the minted ClusterRole's verbs."""


# ----- helpers ---------------------------------------------------------------------------
def cluster_secrets(env: Environment, name: str) -> list[str]:
    """Secrets labelled as registering this cluster name, in any hub namespace."""
    out = kubectl(env, "hub", "get", "secrets", "-A", "-l", f"{CLUSTER_LABEL}={name}",
                  "-o", "name").stdout
    return out.split()


def kubectl_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=30, check=False)


def write_kubeconfig(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def spoke_kubeconfig(env: Environment, spoke: str = "spoke1") -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(env.kubeconfig(spoke).read_text())
    return cfg


def assert_join_refused(env: Environment, name: str, kubeconfig: Path, message: str
                        ) -> subprocess.CompletedProcess[str]:
    res = join(env, name, kubeconfig)
    assert res.returncode == 1, res
    assert res.stdout == ""
    assert res.stderr == f"hmls cluster join: {message}\n"
    assert cluster_secrets(env, name) == []
    return res


def register_raw(env: Environment, cluster: str, raw: bytes) -> str:
    """A cluster Secret written by hand (as an operator could), bypassing ``join``."""
    name = f"raw-{cluster}"
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "hmls-system", "labels": {CLUSTER_LABEL: cluster}},
        "data": {"kubeconfig": base64.b64encode(raw).decode()},
    }
    kubectl(env, "hub", "apply", "-f", "-", input=yaml.safe_dump(secret))
    return name


# ----- 1. cluster join refuses, and writes nothing -----------------------------------------
def test_join_refuses_a_missing_kubeconfig(env: Environment, tmp_path: Path) -> None:
    missing = tmp_path / "missing.kubeconfig"
    assert_join_refused(env, "joinmissing", missing,
                        f"cannot read {missing}: No such file or directory")


def test_join_refuses_exec_without_running_it(env: Environment, tmp_path: Path) -> None:
    marker = tmp_path / "exec-ran"
    cfg = spoke_kubeconfig(env)
    cfg["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh",
        "args": ["-c", f"touch {marker}; echo '{{}}'"]}}
    path = write_kubeconfig(tmp_path / "exec.kubeconfig", cfg)
    assert_join_refused(env, "joinexec", path, f"{path}: kubeconfig refused: "
                        "user.exec runs a program on the controller's host")
    assert not marker.exists()


def test_join_refuses_insecure_skip_tls_verify(env: Environment, tmp_path: Path) -> None:
    cfg = spoke_kubeconfig(env)
    cfg["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    del cfg["clusters"][0]["cluster"]["certificate-authority-data"]
    path = write_kubeconfig(tmp_path / "insecure.kubeconfig", cfg)
    assert_join_refused(env, "joininsecure", path, f"{path}: kubeconfig refused: "
                        "cluster.insecure-skip-tls-verify disables TLS verification")


def test_join_refuses_an_unreachable_server(env: Environment, tmp_path: Path) -> None:
    cfg = spoke_kubeconfig(env)
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens
    path = write_kubeconfig(tmp_path / "dead.kubeconfig", cfg)
    res = join(env, "joindead", path)
    assert res.returncode == 1, res
    assert res.stdout == ""
    prefix = ("hmls cluster join: cannot reach cluster joindead at https://127.0.0.1:9: "
              "cannot connect to 127.0.0.1:9: ")
    assert res.stderr.startswith(prefix), res.stderr
    assert res.stderr.count("\n") == 1  # one line, no traceback
    assert cluster_secrets(env, "joindead") == []


async def test_join_lists_the_permissions_the_credentials_lack(
        env: Environment, tmp_path: Path) -> None:
    """A client certificate the spoke accepts, for users with no or too few RBAC bindings."""
    ca = CertificateAuthority.create(env.pki)  # re-loads the environment's CA

    def kubeconfig_for(user: str) -> Path:
        pair = ca.client(KeyPair(tmp_path / f"{user}.crt", tmp_path / f"{user}.key"), user=user)
        cfg = spoke_kubeconfig(env)
        cfg["users"][0]["user"] = {
            "client-certificate-data": base64.b64encode(pair.cert_pem()).decode(),
            "client-key-data": base64.b64encode(pair.key_pem()).decode()}
        return write_kubeconfig(tmp_path / f"{user}.kubeconfig", cfg)

    nobody = kubeconfig_for("nobody")
    # The spoke authenticates the certificate (and only authorization says no).
    who = kubectl_as(nobody, "get", "mlservices", "-A")
    assert 'User "nobody" cannot list resource "mlservices"' in who.stderr, who.stderr
    res = assert_join_refused(env, "joinnobody", nobody,
                              "the kubeconfig for joinnobody lacks permissions hmls needs: "
                              + permissions.describe(NEEDED))
    assert ("get, list, watch, create, patch, delete mlservices.tensorstack.dev; "
            "get, list, watch, create, patch, delete mlserviceruntimes.tensorstack.dev;"
            ) in res.stderr

    # Read-only access: exactly the write verbs are reported missing.
    reader = kubeconfig_for("hmls-cli-reader")
    rbac = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "hmls-cli-reader"},
         "rules": [{"apiGroups": ["tensorstack.dev"], "verbs": ["get", "list", "watch"],
                    "resources": ["mlservices", "mlserviceruntimes"]},
                   {"apiGroups": [""], "verbs": ["get", "list", "watch"], "resources": ["secrets"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "hmls-cli-reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "hmls-cli-reader"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "hmls-cli-reader"}]},
    ]
    kubectl(env, "spoke1", "apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    readable = {"mlservices", "mlserviceruntimes", "secrets"}
    missing = [a for a in NEEDED if a.verb not in ("get", "list", "watch") or a.resource not in readable]
    expected = ("hmls cluster join: the kubeconfig for joinreader lacks permissions hmls needs: "
                + permissions.describe(missing) + "\n")
    assert "create, patch, delete mlservices.tensorstack.dev; " in expected

    async def refused_for_writes() -> subprocess.CompletedProcess[str] | None:
        res = join(env, "joinreader", reader)
        return res if res.stderr == expected else None
    res = await eventually(refused_for_writes, timeout=10, what="RBAC binding seen by the spoke")
    assert res.returncode == 1
    assert cluster_secrets(env, "joinreader") == []


def test_join_refuses_an_invalid_cluster_name(env: Environment) -> None:
    assert_join_refused(env, "Spoke_1", env.kubeconfig("spoke1"),
                        "cluster name 'Spoke_1' must be a DNS label (a-z, 0-9, '-')")


def test_join_refuses_unloadable_ca_data_with_a_message(env: Environment, tmp_path: Path) -> None:
    cfg = spoke_kubeconfig(env)
    cfg["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        b"not a certificate").decode()
    path = write_kubeconfig(tmp_path / "badca.kubeconfig", cfg)
    res = join(env, "joinbadca", path)
    assert cluster_secrets(env, "joinbadca") == []
    assert res.returncode == 1, res
    assert res.stderr.startswith("hmls cluster join: "), res.stderr
    assert "Traceback" not in res.stderr


# ----- 2. cluster list -----------------------------------------------------------------------
async def listed(env: Environment, ready: Callable[[dict[str, dict[str, str]]], bool]
                 ) -> dict[str, dict[str, str]]:
    """``cluster list`` rows, once the controller's recorded verdicts satisfy ready."""
    async def check() -> dict[str, dict[str, str]] | None:
        rows = cluster_rows(env)
        return rows if ready(rows) else None
    result: dict[str, dict[str, str]] = await eventually(check, timeout=20, interval=0.5,
                                                         what="recorded cluster verdicts")
    return result


async def test_list_shows_the_probe_verdicts_versions_and_use(
        env: Environment, controller: Controller) -> None:
    ns = "t-cli-list"
    namespace_everywhere(env, ns)
    dead = spoke_kubeconfig(env)
    dead["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    raw = [register_raw(env, "brokenx", b"::: not yaml"),
           register_raw(env, "deadlist", yaml.safe_dump(dead).encode())]
    try:
        before = await listed(env, lambda rows: rows.get("deadlist", {}).get("REACHABLE") == "no"
                              and all(rows[s]["REACHABLE"] == "yes" for s in ("spoke1", "spoke2")))
        for spoke in ("spoke1", "spoke2"):
            server = spoke_kubeconfig(env, spoke)["clusters"][0]["cluster"]["server"]
            row = before[spoke]
            assert (row["SERVER"], row["REACHABLE"], row["LAST SEEN"], row["VERSION"],
                    row["LAST ERROR"]) == (server, "yes", "now", VERSION, "-")
            assert row["SINCE"].endswith("Z")
        assert before["brokenx"] == {
            "NAME": "brokenx", "SERVER": "-", "LABELS": "-", "MODE": "trusted", "PROFILE": "-",
            "REACHABLE": "no",
            "SINCE": "-", "LAST SEEN": "-", "VERSION": "-", "HYPERMLSERVICES": "0",
            "AWAITING GRANT": "-",
            "LAST ERROR": "kubeconfig has no current-context"}
        assert before["deadlist"]["SERVER"] == "https://127.0.0.1:9"
        assert before["deadlist"]["LAST SEEN"] == "never"
        assert before["deadlist"]["LAST ERROR"].startswith("cannot connect to 127.0.0.1:9: ")

        # Counted per HyperMLService, not per workload: spoke1 appears in two workloads.
        create(env, hmls(ns, "svc", (["spoke1"], [configmap("a")]),
                         (["spoke1", "spoke2"], [configmap("b")])))
        create(env, hmls(ns, "only1", (["spoke1"], [configmap("c")])))
        after = cluster_rows(env)
        for spoke, added in (("spoke1", 2), ("spoke2", 1)):
            assert int(after[spoke]["HYPERMLSERVICES"]) == \
                int(before[spoke]["HYPERMLSERVICES"]) + added
        assert after["brokenx"]["HYPERMLSERVICES"] == "0"
    finally:
        kubectl(env, "hub", "delete", "secret", "-n", "hmls-system", *raw, "--ignore-not-found")


async def test_list_shows_a_row_for_an_unloadable_kubeconfig(
        env: Environment, controller: Controller) -> None:
    cfg = spoke_kubeconfig(env)
    cfg["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        b"not a certificate").decode()
    raw = register_raw(env, "badcalist", yaml.safe_dump(cfg).encode())
    try:
        rows = await listed(env, lambda rows: rows.get("badcalist", {}).get("REACHABLE") == "no"
                            and rows["spoke1"]["REACHABLE"] == "yes")
        assert rows["spoke1"]["REACHABLE"] == "yes"
        assert rows["badcalist"]["LAST ERROR"].startswith("cannot be used: kubeconfig could "
                                                           "not be loaded")
    finally:
        kubectl(env, "hub", "delete", "secret", "-n", "hmls-system", raw, "--ignore-not-found")


# ----- 3. cluster unjoin -----------------------------------------------------------------------
async def test_unjoin_refuses_while_targeted_and_force_removes(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns, alias = "t-cli-unjoin", "spoke2alias"
    namespace_everywhere(env, ns)
    res = join(env, alias, env.kubeconfig("spoke2"))
    assert res.returncode == 0, res.stderr
    assert res.stdout == (f"cluster {alias} joined ({VERSION}, trusted: every hub namespace "
                          f"writes with these credentials); Secret hmls-system/cluster-{alias} "
                          "written (kubeconfig stored as given)\n")
    assert cluster_secrets(env, alias) == [f"secret/cluster-{alias}"]
    create(env, hmls(ns, "svc", ([alias], [configmap("c")])))
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    assert await clients["spoke2"].get(CONFIGMAPS, ns, "c") is not None  # the alias is spoke2

    res = hmls_cli("cluster", "unjoin", alias, *hub(env), check=False)
    assert res.returncode == 1
    assert res.stderr == (f"hmls cluster unjoin: cluster {alias} is still targeted by {ns}/svc; "
                          "remove it from their workloads first, or pass --force\n")
    assert cluster_secrets(env, alias) == [f"secret/cluster-{alias}"]

    res = hmls_cli("cluster", "unjoin", alias, "--force", *hub(env))
    assert res.stdout == f"cluster {alias} unjoined (still targeted by {ns}/svc)\n"
    assert cluster_secrets(env, alias) == []
    obj = await wait_condition(clients["hub"], ns, "svc", "FullyApplied", "False")
    assert items(obj)[0]["appliedMessage"] == not_registered(alias)

    for name in (alias, "nosuchcluster"):
        res = hmls_cli("cluster", "unjoin", name, *hub(env), check=False)
        assert res.returncode == 1
        assert res.stderr == (f"hmls cluster unjoin: cluster {name} is not registered in "
                              "namespace hmls-system\n")
    delete_leaving_objects(env, ns, "svc")


async def test_unjoin_name_cannot_select_another_cluster(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns, alias = "t-cli-unjoin-inject", "spoke2inj"
    namespace_everywhere(env, ns)
    assert join(env, alias, env.kubeconfig("spoke2")).returncode == 0
    create(env, hmls(ns, "svc", ([alias], [configmap("c")]), deletionPolicy="Orphan"))
    try:
        res = hmls_cli("cluster", "unjoin", f"={alias}", *hub(env), check=False)
        assert cluster_secrets(env, alias) == [f"secret/cluster-{alias}"], res.stdout
        assert res.returncode == 1
    finally:
        kubectl(env, "hub", "delete", "secret", "-n", "hmls-system", f"cluster-{alias}",
                "--ignore-not-found")
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s")


def test_unjoin_refuses_an_invalid_name_with_a_message(env: Environment, joined: list[str]) -> None:
    res = hmls_cli("cluster", "unjoin", "bad name", *hub(env), check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("hmls cluster unjoin: "), res.stderr
    assert "Traceback" not in res.stderr


# ----- 4. status -------------------------------------------------------------------------------
async def test_status_table_json_yaml_and_failures(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-cli-status"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "svc", (["spoke1", "spoke2"], [configmap("cfg", a="1"), mlservice("m")])))
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    await wait_condition(clients["hub"], ns, "svc", "Ready")

    lines = hmls_cli("status", f"{ns}/svc", *hub(env)).stdout.splitlines()
    rows = parse_table(lines[:5], STATUS_HEADER)
    url = f"http://m.{ns}.ksvc.{{}}.t9kcloud.cn"
    assert [list(r.values()) for r in rows] == [
        ["spoke1", "ConfigMap/cfg", "yes", "-", "-", ""],
        ["spoke1", "MLService/m", "yes", "yes", url.format("spoke1"), ""],
        ["spoke2", "ConfigMap/cfg", "yes", "-", "-", ""],
        ["spoke2", "MLService/m", "yes", "yes", url.format("spoke2"), ""],
    ]
    assert lines[5:] == [
        "FullyApplied=True (AllApplied): All manifests have been successfully applied",
        "Ready=True (AllReady): All 2 MLServices are Ready",
    ]

    as_json = json.loads(hmls_cli("status", f"{ns}/svc", *hub(env), "-o", "json").stdout)
    now = await get_hmls(clients["hub"], ns, "svc")
    assert now is not None and as_json == now["status"]
    assert len(as_json["aggregatedStatus"]) == 4
    as_yaml = yaml.safe_load(hmls_cli("status", f"{ns}/svc", *hub(env), "-o", "yaml").stdout)
    assert as_yaml == as_json

    res = hmls_cli("status", f"{ns}/nope", *hub(env), check=False)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr == f"hmls status: HyperMLService {ns}/nope not found\n"

    # A failing item: its message is in the MESSAGE column and in the condition line.
    create(env, hmls(ns, "bad", (["spoke1", "nosuch"], [configmap("c")])))
    await wait_condition(clients["hub"], ns, "bad", "FullyApplied", "False")
    lines = hmls_cli("status", f"{ns}/bad", *hub(env)).stdout.splitlines()
    assert [list(r.values()) for r in parse_table(lines[:3], STATUS_HEADER)] == [
        ["spoke1", "ConfigMap/c", "yes", "-", "-", ""],
        ["nosuch", "ConfigMap/c", "no", "-", "-", not_registered("nosuch")],
    ]
    assert lines[3] == ("FullyApplied=False (ApplyFailed): 1 of 2 manifests not applied: "
                        f"nosuch: ConfigMap {ns}/c: {not_registered('nosuch')}")


# ----- 5. Kubernetes Events --------------------------------------------------------------------
async def test_events_apply_failed_pruned_cleaned_up(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-cli-events"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "broken", (["nosuch"], [configmap("x")])))
    svc = hmls(ns, "svc", (["spoke1"], [configmap("keep"), configmap("drop")]))
    create(env, svc)

    async def apply_failed() -> list[dict[str, str]]:
        return [e for e in described_events(env, ns, "broken") if e["reason"] == "ApplyFailed"]
    failed = await eventually(apply_failed, what="ApplyFailed event on broken")
    assert failed == [{"type": "Warning", "reason": "ApplyFailed", "source": "hmls-controller",
                       "message": f"nosuch: ConfigMap {ns}/x: {not_registered('nosuch')}"}]

    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")
    assert described_events(env, ns, "svc") == []  # nothing went wrong, nothing deleted
    svc["spec"]["workloads"][0]["manifests"] = [configmap("keep")]
    replace_spec(env, svc)

    async def pruned() -> list[dict[str, str]]:
        return [e for e in described_events(env, ns, "svc") if e["reason"] == "Pruned"]
    assert await eventually(pruned, what="Pruned event on svc") == [{
        "type": "Normal", "reason": "Pruned", "source": "hmls-controller",
        "message": f"deleted ConfigMap {ns}/drop from cluster spoke1"}]

    kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--timeout=20s")
    assert await get_hmls(clients["hub"], ns, "svc") is None
    out = kubectl(env, "hub", "get", "events", "-n", ns, "--field-selector", "reason=CleanedUp",
                  "-o", "json").stdout
    cleaned = [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["type"], e["message"])
               for e in json.loads(out)["items"]]
    assert cleaned == [("HyperMLService", "svc", "Normal",
                        f"deleted ConfigMap {ns}/keep from cluster spoke1")]
    assert await clients["spoke1"].get(CONFIGMAPS, ns, "keep") is None


# ----- found while testing the CLI's advice --------------------------------------------------
async def test_fixing_a_misspelt_cluster_name_converges(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-cli-typo"
    namespace_everywhere(env, ns)
    obj = hmls(ns, "svc", (["spoke1", "spokel"], [configmap("c")]))
    create(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied", "False")
    obj["spec"]["workloads"][0]["clusters"] = ["spoke1"]
    replace_spec(env, obj)
    await wait_condition(clients["hub"], ns, "svc", "FullyApplied")

    async def settled() -> bool:
        o = await get_hmls(clients["hub"], ns, "svc")
        return o is not None and "pendingDeletions" not in o["status"]
    try:
        await eventually(settled, timeout=5, what="no pendingDeletions for spokel")
        kubectl(env, "hub", "delete", "hmls", "-n", ns, "svc", "--wait=false")

        async def gone() -> bool:
            return await get_hmls(clients["hub"], ns, "svc") is None
        await eventually(gone, timeout=5, what="deletion finishes")
    finally:
        if await get_hmls(clients["hub"], ns, "svc") is not None:
            delete_leaving_objects(env, ns, "svc")
