"""``kubectl hmls …`` through a real kubectl: it finds the ``kubectl-hmls`` entry point (a
console script of the package, installed by ``make deps``) on PATH and runs it with the
arguments after the plugin's name; ``--kubeconfig``, ``--context`` and ``$KUBECONFIG`` choose
the hub as they do for kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller

from hmls.kube.client import ClusterClient
from tests.helpers import configmap, create, hmls, hmls_cli, namespace_everywhere, wait_condition


@pytest.fixture(scope="module")
def path() -> str:
    """PATH with the directory pip installs console scripts into first."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("kubectl-hmls", path=os.pathsep.join([scripts, os.environ["PATH"]]))
    if found is None:
        pytest.fail(f"kubectl-hmls is not installed (looked in {scripts} and PATH): "
                    "pip install -e . (make deps) installs it with the package")
    return os.pathsep.join([str(Path(found).parent), os.environ["PATH"]])


def kubectl_hmls(path: str, *args: str, kubeconfig_env: Path | None = None
                 ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    env.pop("KUBECONFIG", None)
    if kubeconfig_env is not None:
        env["KUBECONFIG"] = str(kubeconfig_env)
    return subprocess.run(["kubectl", "hmls", *args], env=env, capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.fixture(scope="module")
def two_contexts(env: Environment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One kubeconfig with contexts ``hub`` and ``spoke1``, the spoke's current: only
    ``--context hub`` reaches the hub."""
    clusters, users, contexts = [], [], []
    for name in ("hub", "spoke1"):
        cfg = yaml.safe_load(env.kubeconfig(name).read_text())
        clusters.append({"name": name, "cluster": cfg["clusters"][0]["cluster"]})
        users.append({"name": name, "user": cfg["users"][0]["user"]})
        contexts.append({"name": name, "context": {"cluster": name, "user": name}})
    merged = {"apiVersion": "v1", "kind": "Config", "current-context": "spoke1",
              "clusters": clusters, "users": users, "contexts": contexts}
    out = tmp_path_factory.mktemp("plugin") / "two.kubeconfig"
    out.write_text(yaml.safe_dump(merged))
    return out


def test_kubectl_lists_the_plugin(path: str) -> None:
    res = subprocess.run(["kubectl", "plugin", "list"], env={**os.environ, "PATH": path},
                         capture_output=True, text=True, check=False, timeout=60)
    assert any(line.endswith("/kubectl-hmls") for line in res.stdout.splitlines()), res.stdout
    help_ = kubectl_hmls(path, "--help")
    assert help_.returncode == 0 and help_.stdout.startswith("usage: kubectl hmls "), help_


async def test_every_verb_reaches_the_hub_the_flags_choose(
        env: Environment, clients: dict[str, ClusterClient], controller: Controller, path: str,
        two_contexts: Path) -> None:
    ns = "t-plugin"
    namespace_everywhere(env, ns)
    create(env, hmls(ns, "web", (["spoke1"], [configmap("cfg", a="1")])))
    await wait_condition(clients["hub"], ns, "web", "FullyApplied")
    hub = ["--kubeconfig", str(env.kubeconfig("hub"))]
    # --kubeconfig with --context, or $KUBECONFIG with --context: what hmls answers directly
    cases = [(["cluster", "list"], False), (["status", f"{ns}/web", "-o", "json"], True),
             (["rollout", "status", f"{ns}/web"], False), (["diff", f"{ns}/web"], True)]
    for verb, from_env in cases:
        direct = hmls_cli(*verb, *hub, check=False)
        flags = [*verb, "--context", "hub"] if from_env else [
            *verb, "--kubeconfig", str(two_contexts), "--context", "hub"]
        res = kubectl_hmls(path, *flags, kubeconfig_env=two_contexts if from_env else None)
        assert (res.returncode, res.stdout) == (direct.returncode, direct.stdout), (verb, res)
    # without --context the kubeconfig's current context (a spoke) is used
    res = kubectl_hmls(path, "cluster", "list", "--kubeconfig", str(two_contexts))
    spoke1 = yaml.safe_load(env.kubeconfig("spoke1").read_text())["clusters"][0]["cluster"]
    assert res.returncode == 1 and res.stderr == (
        f"hmls cluster list: hub {spoke1['server']}: 404 page not found (is it the hub? is the "
        "HyperMLService CRD installed?)\n"), res.stderr
    res = kubectl_hmls(path, "cluster", "list", "--kubeconfig", str(two_contexts),
                       "--context", "nope")
    assert res.returncode == 1
    assert res.stderr == ("hmls cluster list: hub kubeconfig: Invalid kube-config file. Expected "
                          f"object with name nope in {two_contexts}/contexts list\n"), res.stderr
