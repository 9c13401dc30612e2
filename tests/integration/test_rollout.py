"""Progressive rollout against real API servers: one cluster at a time with the HeadIngress
following each step, a deadline miss halting and rolling back (the simulator's not-ready knob
plays the bad model), a controller restart mid-rollout, pause, resume and undo."""

from __future__ import annotations

import asyncio
import copy

import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import Controller, eventually
from hmls_devenv.simulator import MLSERVICE, READY_KNOB

from hmls.kube.client import Obj
from hmls.kube.resources import CONTROLLER_REVISIONS, HMLS
from hmls.kube.watching import Informer
from tests.helpers import (
    Clients,
    condition,
    create,
    delete,
    described_events,
    get_hmls,
    hmls,
    hmls_cli,
    hub,
    hub_namespace,
    kubectl,
    mlservice,
    phase,
    progressive,
    replace_spec,
    revised,
    rolled_out,
    route_weights,
    wait_weights,
)


async def replicas(clients: Clients, ns: str) -> dict[str, int]:
    out = {}
    for spoke in ("spoke1", "spoke2"):
        got = await clients[spoke].get(MLSERVICE, ns, "svc")
        assert got is not None
        out[spoke] = got["spec"]["releases"][0]["predictor"]["minReplicas"]
    return out


async def routed(clients: Clients, ns: str) -> dict[str, int]:
    """The VirtualService's weights, clusters at 0 left out."""
    return {c: w for c, w in (await route_weights(clients["ingress"], ns) or {}).items() if w}


async def created(env: Environment, clients: Clients, obj: Obj) -> Obj:
    """Create at revision 1 and wait until it is rolled out everywhere."""
    create(env, obj)
    return await rolled_out(clients, obj["metadata"]["namespace"], 1)


async def soaking_revision_2(env: Environment, clients: Clients, obj: Obj) -> None:
    """Create at revision 1, roll it out, change to revision 2: spoke1 is soaking it."""
    await created(env, clients, obj)
    replace_spec(env, revised(obj))
    await phase(clients, obj["metadata"]["namespace"], "spoke1", "Soaking")


async def test_one_cluster_at_a_time_with_traffic_following_each_step(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "t-rollout-steps"
    hub_namespace(env, ns)
    obj = progressive(ns)
    try:
        first = await created(env, clients, obj)
        assert first["status"]["rollout"]["lastGoodRevision"] == 1
        await wait_weights(clients, ns, {"spoke1": 50, "spoke2": 50})

        replace_spec(env, revised(obj))
        await phase(clients, ns, "spoke1", "Soaking")
        # spoke1 has the new spec and no traffic; spoke2 keeps the old spec and all of it
        assert await replicas(clients, ns) == {"spoke1": 2, "spoke2": 1}
        assert await routed(clients, ns) == {"spoke2": 100}
        await phase(clients, ns, "spoke2", "Soaking")
        assert await replicas(clients, ns) == {"spoke1": 2, "spoke2": 2}
        assert await routed(clients, ns) == {"spoke1": 100}
        done = await rolled_out(clients, ns, 2)
        assert done["status"]["rollout"]["lastGoodRevision"] == 2
        assert condition(done, "RolledOut")["message"] == \
            "every cluster runs revision 2 and is Ready"
        await wait_weights(clients, ns, {"spoke1": 50, "spoke2": 50})

        revisions, _ = await clients["hub"].list(CONTROLLER_REVISIONS, namespace=ns)
        assert sorted(r["revision"] for r in revisions) == [1, 2]
        assert {r["metadata"]["ownerReferences"][0]["uid"] for r in revisions} == \
            {done["metadata"]["uid"]}
        messages = [e["message"] for e in described_events(env, ns, "svc")
                    if e["reason"] == "RolloutStep"]
        assert "spoke1: draining for revision 2" in messages
        assert "spoke2: revision 2 Ready, traffic restored" in messages
        printed = kubectl(env, "hub", "get", "hmls", "-n", ns, "svc").stdout
        assert "2/2 at revision 2" in printed
    finally:
        delete(env, ns)
    revisions, _ = await clients["hub"].list(CONTROLLER_REVISIONS, namespace=ns)
    assert revisions == []  # deleted with the HyperMLService


async def test_a_deadline_miss_halts_and_rolls_the_cluster_back(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    ns = "t-rollout-halt"
    hub_namespace(env, ns)
    obj = progressive(ns, progressDeadlineSeconds=4)
    try:
        await created(env, clients, obj)
        replace_spec(env, revised(obj, ready=False))  # a model that never gets Ready
        await phase(clients, ns, "spoke1", "Applying")
        halted = await phase(clients, ns, "spoke1", "RolledBack", timeout=40)
        cond = condition(halted, "RolledOut")
        assert (cond["status"], cond["reason"]) == ("False", "Halted")
        assert cond["message"] == ("revision 2 halted: spoke1 not Ready within 4s; clusters "
                                   "rolled back to revision 1")
        steps = {s["cluster"]: s for s in halted["status"]["rollout"]["clusters"]}
        assert (steps["spoke1"]["revision"], steps["spoke2"]["revision"]) == (1, 1)
        assert steps["spoke2"]["phase"] == "Pending"
        # spoke2 never got the bad revision; spoke1 runs the good one again
        for spoke in ("spoke1", "spoke2"):
            got = await clients[spoke].get(MLSERVICE, ns, "svc")
            assert got is not None and READY_KNOB not in (got["metadata"].get("annotations")
                                                          or {})
        await wait_weights(clients, ns, {"spoke1": 50, "spoke2": 50})
        reasons = {e["reason"] for e in described_events(env, ns, "svc")}
        assert {"RolloutStepFailed", "RolloutHalted"} <= reasons
    finally:
        delete(env, ns)


async def test_a_restart_mid_rollout_resumes_without_applying_twice(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-rollout-restart"
    hub_namespace(env, ns)
    obj = progressive(ns, traffic=False, soakSeconds=5)
    try:
        await soaking_revision_2(env, clients, obj)
        got = await clients["spoke1"].get(MLSERVICE, ns, "svc")
        assert got is not None
        generation = got["metadata"]["generation"]
        controller.stop()
        controller.start()
        await rolled_out(clients, ns, 2)
        assert await replicas(clients, ns) == {"spoke1": 2, "spoke2": 2}
        got = await clients["spoke1"].get(MLSERVICE, ns, "svc")
        assert got is not None and got["metadata"]["generation"] == generation
    finally:
        delete(env, ns)


async def test_pause_resume_status_and_undo_from_the_command_line(
        env: Environment, clients: Clients, controller: Controller) -> None:
    ns = "t-rollout-cli"
    hub_namespace(env, ns)
    # the pause must land within spoke1's soak: the command's start took over 3 s on a busy
    # machine, and spoke2 had started and rolled out before it
    obj = progressive(ns, traffic=False, soakSeconds=10)
    ref = f"{ns}/svc"
    try:
        await soaking_revision_2(env, clients, obj)
        assert hmls_cli("rollout", "pause", ref, *hub(env)).stdout == \
            f"rollout of {ref} paused\n"
        paused = await phase(clients, ns, "spoke1", "Done")
        await asyncio.sleep(2)  # a paused rollout starts nothing: spoke2 stays where it is
        paused = await get_hmls(clients["hub"], ns, "svc") or paused
        assert condition(paused, "RolledOut")["reason"] == "Paused"
        assert await replicas(clients, ns) == {"spoke1": 2, "spoke2": 1}
        shown = hmls_cli("rollout", "status", ref, *hub(env)).stdout
        assert "spoke2    1          Pending" in shown, shown

        hmls_cli("rollout", "resume", ref, *hub(env))
        watched = hmls_cli("rollout", "status", ref, "--watch", *hub(env), check=False)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert "RolledOut=True (AllClustersUpdated)" in watched.stdout
        assert await replicas(clients, ns) == {"spoke1": 2, "spoke2": 2}

        res = hmls_cli("rollout", "undo", ref, *hub(env))
        assert res.stdout == f"{ref} rolled back to the workloads of revision 1\n"
        await rolled_out(clients, ns, 3)  # revision 1's workloads, renumbered
        assert await replicas(clients, ns) == {"spoke1": 1, "spoke2": 1}
        res = hmls_cli("rollout", "undo", ref, "--to-revision", "9", *hub(env), check=False)
        assert res.returncode == 2
        assert res.stderr == (f"hmls rollout undo: {ref} has no revision 9 (kept: 2, 3)\n")
    finally:
        delete(env, ns)


def test_bad_rollout_settings_are_refused_at_admission(env: Environment) -> None:
    ns = "t-rollout-admission"
    hub_namespace(env, ns)
    for value, message in (("0%", "maxConcurrency must be an integer >= 1 or a percentage"),
                           (0, "maxConcurrency must be an integer >= 1 or a percentage"),
                           ("fast", "maxConcurrency must be an integer >= 1 or a percentage")):
        obj = progressive(ns, traffic=False, maxConcurrency=value)
        res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(obj), check=False)
        assert res.returncode != 0 and message in res.stderr, (value, res.stderr)
    obj = progressive(ns, traffic=False, strategy="Canary")
    res = kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert 'supported values: "All", "Progressive"' in res.stderr


async def test_moving_to_another_cluster_rolls_out_there_before_claiming_fully_applied(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """Found by the soak (seed 4066301207): a progressive HyperMLService moved to another
    cluster said FullyApplied=True for the new generation before that cluster had it."""
    ns = "t-rollout-move"
    hub_namespace(env, ns)
    obj = hmls(ns, "svc", (["spoke1"], [mlservice("svc")]),
               rollout={"strategy": "Progressive", "soakSeconds": 1})
    try:
        await created(env, clients, obj)
        moved = copy.deepcopy(obj)
        moved["spec"]["workloads"][0]["clusters"] = ["spoke2"]

        seen: list[Obj] = []  # every version the hub serves, from a watch
        watch: Informer[Obj] = Informer(clients["hub"], HMLS, namespace=ns,
                                        on_event=lambda _k, _o, new: seen.append(new or {}))
        task = asyncio.create_task(watch.run())
        try:
            await watch.synced.wait()
            replace_spec(env, moved)
            await rolled_out(clients, ns, 2)
        finally:
            task.cancel()
        claims = [o for o in seen if condition(o, "FullyApplied").get("status") == "True"
                  and condition(o, "FullyApplied").get("observedGeneration") == 2]
        assert claims, "FullyApplied=True for generation 2 was never written"
        for o in claims:  # each claim lists spoke2's MLService as applied
            assert [i["cluster"] for i in o["status"]["aggregatedStatus"]
                    if i["resource"]["kind"] == "MLService" and i["applied"]] == ["spoke2"], \
                o["status"]
        assert await clients["spoke1"].get(MLSERVICE, ns, "svc") is None
    finally:
        delete(env, ns)


async def test_a_fix_after_a_halted_revision_reaches_every_cluster(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """A revision that halted (and rolled spoke1 back) is followed by a fix: the halt concerns
    only the halted revision, so the fix goes to every cluster and no stale ``halted`` is left
    in ``status.rollout`` to stop it."""
    ns = "t-rollout-fix-after-halt"
    hub_namespace(env, ns)
    obj = progressive(ns, traffic=False, soakSeconds=1, progressDeadlineSeconds=6,
                      maxConcurrency=1, order=["spoke1", "spoke2"])
    try:
        await created(env, clients, obj)
        replace_spec(env, revised(obj, ready=False))  # revision 2: never Ready
        halted = await phase(clients, ns, "spoke1", "RolledBack", timeout=40)
        cond = condition(halted, "RolledOut")
        assert (cond["status"], cond["reason"]) == ("False", "Halted"), cond
        assert "halted" in halted["status"]["rollout"]

        replace_spec(env, revised(obj, replicas=3))  # revision 3: the fix
        done = await rolled_out(clients, ns, 3)
        assert "halted" not in done["status"]["rollout"], done["status"]["rollout"]
        assert done["status"]["rollout"]["lastGoodRevision"] == 3
        steps = {s["cluster"]: s for s in done["status"]["rollout"]["clusters"]}
        assert {c: (s["revision"], s["phase"]) for c, s in steps.items()} == \
            {"spoke1": (3, "Done"), "spoke2": (3, "Done")}
        assert await replicas(clients, ns) == {"spoke1": 3, "spoke2": 3}
        for spoke in ("spoke1", "spoke2"):
            got = await clients[spoke].get(MLSERVICE, ns, "svc")
            assert got is not None and READY_KNOB not in (got["metadata"].get("annotations")
                                                          or {})
    finally:
        delete(env, ns)


async def test_a_fix_supersedes_a_step_waiting_on_the_previous_revision(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """Revision 1 never gets Ready on spoke1 (an override plays the bad model there) and its
    deadline is far off; revision 2, the fix, supersedes spoke1's step at once instead of
    waiting out the deadline of revision 1."""
    ns = "t-rollout-fix-supersedes"
    hub_namespace(env, ns)
    obj = progressive(ns, traffic=False, soakSeconds=1, progressDeadlineSeconds=600)
    obj["spec"]["workloads"][0]["overrides"] = [{
        "clusters": ["spoke1"], "target": {"kind": "MLService"},
        "mergePatch": {"metadata": {"annotations": {READY_KNOB: "false"}}}}]
    fixed = copy.deepcopy(obj)
    del fixed["spec"]["workloads"][0]["overrides"]
    try:
        create(env, obj)  # the first revision: both clusters at once

        async def waiting() -> Obj | None:
            got = await get_hmls(clients["hub"], ns, "svc")
            steps = {s["cluster"]: s for s in
                     ((got or {}).get("status") or {}).get("rollout", {}).get("clusters") or []}
            ok = (steps.get("spoke1", {}).get("phase") == "Applying"
                  and steps["spoke1"].get("revision") == 1
                  and steps.get("spoke2", {}).get("phase") in ("Soaking", "Done"))
            return got if ok else None
        await eventually(waiting, timeout=30, what="spoke1 Applying revision 1, spoke2 Ready")
        got = await clients["spoke1"].get(MLSERVICE, ns, "svc")
        assert got is not None and (got["metadata"].get("annotations") or {}).get(
            READY_KNOB) == "false"

        replace_spec(env, fixed)  # revision 2: the fix
        done = await rolled_out(clients, ns, 2)
        steps = {s["cluster"]: s for s in done["status"]["rollout"]["clusters"]}
        assert {c: (s["revision"], s["phase"]) for c, s in steps.items()} == \
            {"spoke1": (2, "Done"), "spoke2": (2, "Done")}
        assert done["status"]["rollout"]["lastGoodRevision"] == 2
        for spoke in ("spoke1", "spoke2"):
            got = await clients[spoke].get(MLSERVICE, ns, "svc")
            assert got is not None and READY_KNOB not in (got["metadata"].get("annotations")
                                                          or {})

        async def superseded() -> list[str]:
            return [e["message"] for e in described_events(env, ns, "svc")
                    if e["reason"] == "RolloutStepSuperseded"]
        messages = await eventually(superseded, timeout=10, what="a RolloutStepSuperseded Event")
        # spoke2's step (Soaking revision 1, which renders there as revision 2) goes on
        assert messages == ["spoke1: the step to revision 1 is superseded by revision 2"]
    finally:
        delete(env, ns)


async def test_a_serving_service_made_progressive_keeps_serving_while_revisions_roll_out(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    """Tried as a user would (the demo, session 14): a serving HyperMLService switched to
    Progressive, and revisions pushed over its first soak.  The first revision goes to both
    clusters at once, and the fixes supersede both steps: with no cluster left to take their
    traffic, neither is held out of the HeadIngress (both were: the routes were kept only
    because none was left, TrafficReady False, and the rollout waited on its backoff)."""
    ns = "t-rollout-adopted"
    hub_namespace(env, ns)
    obj = progressive(ns, soakSeconds=4)
    rollout = obj["spec"].pop("rollout")
    try:
        create(env, obj)
        await wait_weights(clients, ns, {"spoke1": 50, "spoke2": 50})
        made = copy.deepcopy(obj)
        made["spec"]["rollout"] = rollout
        replace_spec(env, made)
        soaking = await phase(clients, ns, "spoke1", "Soaking")
        assert condition(soaking, "TrafficReady")["status"] == "True", condition(
            soaking, "TrafficReady")
        assert await routed(clients, ns) == {"spoke1": 50, "spoke2": 50}
        replace_spec(env, revised(made))
        await phase(clients, ns, "spoke1", "Soaking")
        replace_spec(env, revised(made, replicas=3))
        loop = asyncio.get_running_loop()
        pushed = loop.time()
        done = await rolled_out(clients, ns, 3)
        took = loop.time() - pushed
        print(f"revision 3 rolled out {took:.1f} s after it was pushed")
        assert {s["cluster"]: (s["revision"], s["phase"])
                for s in done["status"]["rollout"]["clusters"]} == \
            {"spoke1": (3, "Done"), "spoke2": (3, "Done")}
        assert took < 15, f"revision 3 took {took:.1f} s to roll out"
        assert await routed(clients, ns) == {"spoke1": 50, "spoke2": 50}
    finally:
        delete(env, ns)


async def test_a_rollout_goes_on_while_its_traffic_cannot_be_routed(
        env: Environment, clients: Clients, controller: Controller) -> None:
    """An ingress cluster that is not registered keeps TrafficReady False, so no reconcile of
    this HyperMLService converges and its backoff grows towards 300 s; a step's soak must
    still end on time (the worker honoured a reconcile's timers only when it converged)."""
    ns = "t-rollout-unrouted"
    hub_namespace(env, ns)
    obj = progressive(ns, soakSeconds=3)
    obj["spec"]["traffic"]["ingressCluster"] = "ingress-gone"
    try:
        first = await created(env, clients, obj)
        assert condition(first, "TrafficReady")["status"] == "False"
        replace_spec(env, revised(obj))
        loop = asyncio.get_running_loop()
        pushed = loop.time()
        await rolled_out(clients, ns, 2)
        took = loop.time() - pushed
        print(f"revision 2 rolled out {took:.1f} s after it was pushed")
        # two steps of a 3 s soak each, and their applies
        assert took < 20, f"revision 2 took {took:.1f} s to roll out"
    finally:
        delete(env, ns)


async def test_a_drain_waits_while_the_ingress_cluster_is_down(
        env: Environment, clients: Clients, controller: Controller, ingress: str) -> None:
    """spoke1's step drains it before revision 2 is applied there.  With the ingress cluster
    down the live routes still send spoke1 its half of the traffic, so spoke1 keeps revision
    1 until the ingress has the routes without it (the drain used to end on the plan: spoke1
    got revision 2 at once while the ingress still routed to it)."""
    ns = "t-rollout-ingress-down"
    hub_namespace(env, ns)
    obj = progressive(ns, soakSeconds=1)
    try:
        await created(env, clients, obj)
        await wait_weights(clients, ns, {"spoke1": 50, "spoke2": 50})
        env.stop_cluster("ingress")
        try:
            replace_spec(env, revised(obj))
            await phase(clients, ns, "spoke1", "Draining")
            loop = asyncio.get_running_loop()
            until = loop.time() + 8
            while loop.time() < until:  # the controller finds the ingress down, and waits
                assert await replicas(clients, ns) == {"spoke1": 1, "spoke2": 1}
                await asyncio.sleep(0.5)
            waiting = await get_hmls(clients["hub"], ns, "svc")
            steps = {s["cluster"]: s["phase"] for s in
                     ((waiting or {}).get("status") or {})["rollout"]["clusters"]}
            assert steps["spoke1"] == "Draining", steps
            assert condition(waiting, "TrafficReady")["status"] == "False"
        finally:
            env.start_cluster("ingress")
        await rolled_out(clients, ns, 2)
        assert await replicas(clients, ns) == {"spoke1": 2, "spoke2": 2}
        await wait_weights(clients, ns, {"spoke1": 50, "spoke2": 50})
    finally:
        delete(env, ns)
