"""Argo CD's health of a HyperMLService (config/argocd/argocd-cm.yaml), run in a real Lua 5.1
interpreter (the language of Argo CD's Lua engine) over ``kubectl … -o json`` of
HyperMLServices that the real controller brought into each state on the local environment.

Argo CD hands the script the object as a Lua table (JSON null is nil); here the JSON is written
as a Lua table literal. Each verdict is also checked against kstatus' (cli-utils), which Flux
and kpt use, so the GitOps tools agree.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.simulator import READY_KNOB

from hmls.kube.client import ClusterClient, Obj
from tests.helpers import (
    REPO,
    condition,
    configmap,
    get_hmls,
    hmls,
    kstatus,
    kubectl,
    load_sample,
    mlservice,
    namespace_everywhere,
    wait_condition,
)

KEY = "resource.customizations.health.tensorstack.dev_HyperMLService"
NS = "t-argocd"
# Argo CD's verdict -> kstatus' for the same object (a paused rollout is what its user asked
# for: kstatus sees it Current, Argo CD shows it Suspended)
KSTATUS = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed",
           "Suspended": "Current"}


def lua_literal(value: Any) -> str:
    """JSON as a Lua 5.1 table constructor (null, as Argo CD gives it, is nil: left out)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}"
                               for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(f"\\{ord(ch)}" if ch in '"\\' or ord(ch) < 32 else ch
                             for ch in value) + '"'
    raise TypeError(f"not JSON: {value!r}")


@pytest.fixture(scope="module")
def health_script() -> str:
    cm = yaml.safe_load((REPO / "config" / "argocd" / "argocd-cm.yaml").read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    return str(cm["data"][KEY])


@pytest.fixture(scope="module")
def lua() -> str:
    path = shutil.which("lua5.1")
    if path is None:
        pytest.fail("lua5.1 is not on PATH: apt-get install -y lua5.1 (.ci/run installs it)")
    return path


def argocd_health(lua: str, script: str, obj: Obj) -> tuple[str, str]:
    """(status, message) of Argo CD's health script for obj: ``obj`` is a global there, and
    the script's chunk returns the table hs."""
    program = (f"obj = {lua_literal(obj)}\n"
               f"local hs = (function()\n{script}\nend)()\n"
               'io.write(hs.status, "\\n", hs.message or "")\n')
    res = subprocess.run([lua, "-"], input=program, capture_output=True, text=True,
                         check=False, timeout=30)
    assert res.returncode == 0, res.stderr
    status, _, message = res.stdout.partition("\n")
    return status, message


def test_lua_literals_survive_the_interpreter(lua: str) -> None:
    """The conversion the test relies on: quotes, backslashes, newlines, nesting, nil."""
    value = {"s": 'a "quoted" \\ line\nnext', "n": [1, 2.5, -3], "t": True, "none": None,
             "deep": {"x": [{"y": "z"}]}}
    program = (f"local v = {lua_literal(value)}\n"
               'io.write(v.s, "|", #v.n, v.n[2], "|", tostring(v.t), "|", tostring(v.none),'
               ' "|", v.deep.x[1].y)\n')
    res = subprocess.run([lua, "-"], input=program, capture_output=True, text=True,
                         check=False, timeout=30)
    assert res.stdout == 'a "quoted" \\ line\nnext|32.5|true|nil|z', res.stdout + res.stderr


def _json(res: subprocess.CompletedProcess[str]) -> Obj:
    obj: Obj = json.loads(res.stdout)
    return obj


def _get(env: Environment, name: str) -> Obj:
    return _json(kubectl(env, "hub", "get", "hmls", "-n", NS, name, "-o", "json"))


async def _quiet(hub: ClusterClient, name: str, ctype: str, status: str = "True") -> None:
    """Wait for a condition, and for no Reconciling alongside it (a Ready CR may still have a
    last step to write)."""
    await wait_condition(hub, NS, name, ctype, status, timeout=40)

    async def settled() -> bool:
        obj = await get_hmls(hub, NS, name)
        return condition(obj, "Reconciling").get("status") != "True"
    if ctype != "Reconciling":
        await eventually(settled, timeout=20, what=f"{name} without Reconciling")


async def test_argocd_health_of_hypermlservices_in_each_state(
        env: Environment, clients: dict[str, ClusterClient], controller: Controller,
        lua: str, health_script: str) -> None:
    hub = clients["hub"]
    namespace_everywhere(env, NS)
    seen: dict[str, tuple[str, str]] = {}
    try:
        # just created: no status yet (kubectl's own answer to the create)
        sample = load_sample(NS)
        seen["created"] = argocd_health(lua, health_script, _json(kubectl(
            env, "hub", "create", "-f", "-", "-o", "json", input=yaml.safe_dump(sample))))
        # applied everywhere and Ready
        await _quiet(hub, sample["metadata"]["name"], "Ready")
        healthy = _get(env, sample["metadata"]["name"])
        seen["healthy"] = argocd_health(lua, health_script, healthy)
        # a spec change the controller has not observed yet (kubectl's answer to the patch)
        seen["edited"] = argocd_health(lua, health_script, _json(kubectl(
            env, "hub", "patch", "hmls", "-n", NS, sample["metadata"]["name"], "--type=merge",
            "-o", "json", "-p", json.dumps({"spec": {"driftPolicy": "Report"}}))))
        # applied, waiting for an MLService that does not become Ready
        waiting = mlservice("slow")
        waiting["metadata"]["annotations"] = {READY_KNOB: "false"}
        kubectl(env, "hub", "create", "-f", "-",
                input=yaml.safe_dump(hmls(NS, "waiting", (["spoke1"], [waiting]))))
        await _quiet(hub, "waiting", "Reconciling")
        seen["waiting"] = argocd_health(lua, health_script, _get(env, "waiting"))
        # a kind the cluster does not serve: nothing moves without a person
        widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        kubectl(env, "hub", "create", "-f", "-",
                input=yaml.safe_dump(hmls(NS, "stuck", (["spoke1"], [widget]))))
        await _quiet(hub, "stuck", "Stalled")
        seen["stuck"] = argocd_health(lua, health_script, _get(env, "stuck"))
        # a progressive rollout created paused
        kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(hmls(
            NS, "paused", (["spoke1", "spoke2"], [configmap("cfg", a="1")]),
            rollout={"strategy": "Progressive", "paused": True})))

        async def paused() -> Obj | None:
            obj = await get_hmls(hub, NS, "paused")
            return obj if condition(obj, "RolledOut").get("reason") == "Paused" else None
        await eventually(paused, timeout=30, what="RolledOut reason Paused")
        suspended = _get(env, "paused")
        seen["paused"] = argocd_health(lua, health_script, suspended)

        assert seen["created"] == ("Progressing", "Waiting for the hmls controller to observe "
                                   "generation 1")
        assert seen["healthy"] == ("Healthy", condition(healthy, "Ready")["message"])
        assert seen["edited"] == ("Progressing", "Waiting for the hmls controller to observe "
                                  "generation 2")
        assert seen["waiting"][0] == "Progressing" and "slow" in seen["waiting"][1], seen
        assert seen["stuck"][0] == "Degraded"
        assert "is not served by cluster spoke1" in seen["stuck"][1], seen["stuck"]
        assert seen["paused"] == ("Suspended", condition(suspended, "RolledOut")["message"])
        # kstatus (Flux, kpt) reads the same objects the same way
        for state, name in (("healthy", sample["metadata"]["name"]), ("waiting", "waiting"),
                            ("stuck", "stuck"), ("paused", "paused")):
            assert kstatus(_get(env, name))[0] == KSTATUS[seen[state][0]], (state, seen)
        # the script is not vacuous: Stalled outranks a Ready that is True
        both = copy.deepcopy(healthy)
        both["status"]["conditions"].append({"type": "Stalled", "status": "True",
                                             "reason": "Conflict", "message": "held"})
        assert argocd_health(lua, health_script, both) == ("Degraded", "held")
    finally:
        kubectl(env, "hub", "delete", "hmls", "--all", "-n", NS, "--timeout=30s", check=False)
