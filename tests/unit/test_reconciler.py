"""The reconciler's per-cluster apply against a fake spoke (``SpokeAPI``): one item's failure
stays its own, namespaces come first, unchanged objects cost nothing, drift is put back or
reported.  No API server: the real-server behaviour is in tests/integration/test_truth.py."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from hmls.domain.access import AccessPolicy
from hmls.domain.drift import Ownership
from hmls.domain.models import FINALIZER, Owner, Spec
from hmls.domain.patch import merge_patch
from hmls.domain.render import render
from hmls.domain.status import Status, status_patch
from hmls.engine.hubcache import Cached, lean
from hmls.engine.reconciler import Reconciler
from hmls.engine.rollouts import Revisions
from hmls.engine.spokes import NamespaceView, Observed
from hmls.kube import errors
from hmls.kube.client import Obj
from hmls.kube.resources import Resource
from hmls.metrics import Metrics

OWNER = Owner("demo", "svc", "uid-1")


def fields_of(value: Any) -> dict[str, Any]:
    """fieldsV1 of an apply of ``value`` where every list is atomic (as in a CRD)."""
    if not isinstance(value, dict):
        return {}
    return {f"f:{k}": fields_of(v) for k, v in value.items()
            if v is not None and k not in ("apiVersion", "kind", "name", "namespace")}


def observed(body: Obj, res: Resource, *, uid: str = OWNER.uid, drop: str | None = None) -> Observed:
    """What a watch would hold after hmls applied body (minus the field ``drop``, taken by
    kubectl-patch)."""
    fields = fields_of(body)
    others: tuple[tuple[str, str], ...] = ()
    if drop:
        del fields["f:data"][f"f:{drop}"]
        others = (("kubectl-patch", json.dumps({"f:data": {f"f:{drop}": {}}})),)
    raw = {"metadata": {**body["metadata"], "uid": "u", "resourceVersion": "1",
                        "labels": {**body["metadata"]["labels"],
                                   "hmls.tensorstack.dev/owner-uid": uid},
                        "managedFields": [{"manager": "hmls-controller", "operation": "Apply",
                                           "fieldsType": "FieldsV1", "fieldsV1": fields}]}}
    obs = Observed.of(raw, res)
    return replace(obs, ownership=Ownership(obs.ownership.ours, others)) if others else obs


class FakeSpoke:
    def __init__(self, name: str = "s1") -> None:
        self.name = name
        self.server = f"https://{name}"
        self.access = AccessPolicy()
        self.writers: list[str | None] = []
        self.reachable: bool | None = True
        self.objects: dict[tuple[str, str], Observed] = {}
        self.applied: list[tuple[str, bool]] = []
        self.failures: dict[str, errors.KubeError] = {}
        self.fail_all: errors.KubeError | None = None
        self.statuses: dict[str, dict[str, Any]] = {}
        """The status the object of this name reports once applied."""
        self.namespaces: dict[str, NamespaceView] = {}
        self.ensured: list[str] = []
        self.watched: set[Resource] = set()

    def unusable(self) -> tuple[str, str] | None:
        return None

    async def resource(self, api_version: str, kind: str) -> Resource:
        if kind == "Widget":
            raise errors.UnknownKind(f"kind Widget in apiVersion {api_version} is not served "
                                     f"by cluster {self.name} (is its CRD installed?)")
        return Resource(api_version, kind, kind.lower() + "s", namespaced=kind != "Namespace")

    async def cached(self, resource: Resource, namespace: str | None, name: str) -> Observed | None:
        return self.objects.get((resource.kind, name))

    async def watch(self, resources: Iterable[Resource]) -> None:
        self.watched.update(resources)

    async def apply(self, body: Obj, resource: Resource, *, force: bool,
                    as_user: str | None = None) -> Observed:
        name = body["metadata"]["name"]
        if self.fail_all or name in self.failures:
            raise self.fail_all or self.failures[name]
        self.applied.append((name, force))
        self.writers.append(as_user)
        self.objects[(resource.kind, name)] = observed(body, resource)
        if name in self.statuses:
            self.objects[(resource.kind, name)] = replace(
                self.objects[(resource.kind, name)],
                status_json=json.dumps(self.statuses[name], separators=(",", ":")))
        return self.objects[(resource.kind, name)]

    def owned(self, uid: str, kinds: Any = ()) -> list[Any]:
        return [(Resource(obs.api_version, kind, kind.lower() + "s",
                          namespaced=kind != "Namespace"),
                 obs.namespace, name) for (kind, name), obs in self.objects.items()
                if obs.owner_uid == uid]

    async def delete(self, resource: Resource, namespace: str | None, name: str, *,
                     owner_uid: str, as_user: str | None = None) -> bool:
        found = self.objects.get((resource.kind, name))
        if found is None or found.owner_uid != owner_uid:
            return False
        del self.objects[(resource.kind, name)]
        return True

    async def ensure_namespace(self, name: str, owner: Owner) -> bool:
        self.ensured.append(name)
        if name == "forbidden-ns":
            raise errors.Forbidden('namespaces is forbidden: User "x" cannot create', status=403)
        if name in self.namespaces:
            return False
        self.namespaces[name] = NamespaceView(name, False, True)
        return True

    async def namespace(self, name: str) -> NamespaceView | None:
        return self.namespaces.get(name)


class FakeFleet:
    def __init__(self, *spokes: FakeSpoke) -> None:
        self.spokes = {s.name: s for s in spokes}

    def get(self, name: str) -> FakeSpoke | None:
        return self.spokes.get(name)

    def names(self) -> list[str]:
        return sorted(self.spokes)

    def not_registered(self, name: str) -> str:
        return f"cluster {name} is not registered"

    def reachability(self) -> dict[str, bool | None]:
        return {n: s.reachable for n, s in self.spokes.items()}

    def labels(self) -> dict[str, dict[str, str]]:
        return {n: {} for n in self.spokes}


class FakeRevisionClient:
    """The hub's ControllerRevisions, in memory (what ``Revisions`` calls of a client)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}

    async def list(self, res: Resource, *, namespace: str | None = None,
                   label_selector: str | None = None) -> tuple[list[Obj], str]:
        return [o for (ns, _), o in self.objects.items() if ns == namespace], "1"

    async def create(self, res: Resource, namespace: str, obj: Obj) -> Obj:
        self.objects[(namespace, obj["metadata"]["name"])] = obj
        return obj

    async def patch(self, res: Resource, namespace: str, name: str, patch: Obj) -> Obj:
        self.objects[(namespace, name)] = merge_patch(self.objects[(namespace, name)], patch)
        return self.objects[(namespace, name)]

    async def delete(self, res: Resource, namespace: str, name: str) -> bool:
        return self.objects.pop((namespace, name), None) is not None


class FakeHub:
    """The hub (``HubAPI``) in memory: the stored HyperMLServices, every status write as the
    merge patch the real hub would get, and the Events."""

    def __init__(self, *objects: Obj) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                        for o in objects}
        self.revisions = Revisions(FakeRevisionClient())  # type: ignore[arg-type]
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.version = 1

    def get(self, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def _stored(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        stored = self.objects[(meta["namespace"], meta["name"])]
        if stored["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise errors.Conflict("the object has been modified", status=409)
        self.version += 1
        stored["metadata"]["resourceVersion"] = str(self.version)
        return stored

    async def set_finalizers(self, obj: Obj, finalizers: list[str]) -> Obj | None:
        self._stored(obj)["metadata"]["finalizers"] = finalizers
        return self.get(obj["metadata"]["namespace"], obj["metadata"]["name"])

    async def write_status(self, obj: Obj, status: Status) -> Obj | None:
        patch = status_patch(obj.get("status") or {}, status.to_wire())
        if patch is None:
            return None
        stored = self._stored(obj)
        self.patches.append(patch)
        stored["status"] = merge_patch(stored.get("status") or {}, patch)
        return self.get(obj["metadata"]["namespace"], obj["metadata"]["name"])

    async def emit(self, obj: Obj, *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def forget(self, uid: str) -> None:
        pass


def cm(name: str, namespace: str = "demo", **data: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data or {"k": "v"}}


async def apply(spoke: FakeSpoke, manifests: list[Obj], **spec: Any) -> dict[str, Any]:
    parsed = Spec.model_validate({"workloads": [{"clusters": [spoke.name],
                                                 "manifests": manifests}], **spec})
    desired = render(OWNER, parsed, {})
    rec = Reconciler(hub=FakeHub(), fleet=FakeFleet(spoke), metrics=Metrics())
    applied = await rec.apply(OWNER, desired, force=parsed.take_over,
                              correct_drift=parsed.drift_policy == "Correct")
    return {desired[i].ref.name: r for i, r in applied.items.items()}


async def test_each_failure_is_its_items_own() -> None:
    spoke = FakeSpoke()
    spoke.failures["bad"] = errors.ServerError(
        "failed to create typed patch object (/v1, Kind=ConfigMap) demo/bad: .data.a: "
        "expected string, got &value.valueUnstructured{Value:1}", status=500)
    spoke.failures["dup"] = errors.Conflict("Apply failed with 1 conflict", status=409)
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    out = await apply(spoke, [cm("bad"), cm("good"), widget, cm("dup")])
    assert out["bad"].message.startswith("rejected by cluster s1: failed to create typed patch")
    assert out["w"].message == ("kind Widget in apiVersion example.com/v1 is not served by "
                                "cluster s1 (is its CRD installed?)")
    assert out["dup"].message == "conflict by cluster s1: Apply failed with 1 conflict"
    assert out["good"].applied is True
    assert spoke.reachable is True  # the reconciler never decides reachability
    # every served kind's informer is started together, before the first group is applied
    assert {r.kind for r in spoke.watched} == {"ConfigMap"}


async def test_a_transport_failure_ends_the_clusters_turn() -> None:
    spoke = FakeSpoke()
    spoke.failures["secret"] = errors.Unreachable("cannot connect to 127.0.0.1:1: refused")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "secret"}}
    mls = {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
           "metadata": {"name": "m"}, "spec": {}}
    out = await apply(spoke, [secret, mls])
    message = "cluster s1 is unreachable: cannot connect to 127.0.0.1:1: refused"
    assert out["secret"].message == message
    assert out["m"].message == message  # later ranks are not tried
    assert spoke.applied == []


async def test_missing_namespaces_are_created_first_and_once() -> None:
    spoke = FakeSpoke()
    spoke.access = AccessPolicy(other_namespaces=True)
    out = await apply(spoke, [cm("a"), cm("b"), cm("c", "forbidden-ns")])
    assert spoke.ensured == ["demo", "forbidden-ns"]
    assert out["a"].applied and out["b"].applied
    assert out["c"].message == (
        "namespace forbidden-ns is missing on cluster s1 and could not be created: forbidden "
        'by cluster s1: namespaces is forbidden: User "x" cannot create')


async def test_the_access_policy_decides_before_any_namespace_is_made() -> None:
    spoke = FakeSpoke()
    out = await apply(spoke, [cm("c", "elsewhere")])
    assert "differs from the HyperMLService's namespace" in out["c"].message
    assert spoke.ensured == []


async def test_unchanged_objects_cost_no_request() -> None:
    spoke = FakeSpoke()
    await apply(spoke, [cm("a")])
    assert spoke.applied == [("a", False)]
    out = await apply(spoke, [cm("a")])
    assert spoke.applied == [("a", False)]
    assert out["a"].applied and out["a"].drift is None


@pytest.mark.parametrize("policy", ["Correct", "Report"])
async def test_drift_is_put_back_or_reported(policy: str) -> None:
    spoke = FakeSpoke()
    await apply(spoke, [cm("a", k="v", other="x")])
    res = Resource("v1", "ConfigMap", "configmaps", True)
    applied_body = render(OWNER, Spec.model_validate(
        {"workloads": [{"clusters": ["s1"], "manifests": [cm("a", k="v", other="x")]}]}), {})[0].body
    spoke.objects[("ConfigMap", "a")] = observed(applied_body, res, drop="k")
    out = await apply(spoke, [cm("a", k="v", other="x")], driftPolicy=policy)
    if policy == "Correct":
        assert spoke.applied == [("a", False), ("a", True)]  # forced: the field is ours again
        assert out["a"].drift is None
    else:
        assert spoke.applied == [("a", False)]
        assert out["a"].drift is not None and "data.k" in out["a"].drift
        assert "kubectl-patch" in out["a"].drift


async def test_an_object_of_another_owner_is_a_conflict() -> None:
    spoke = FakeSpoke()
    res = Resource("v1", "ConfigMap", "configmaps", True)
    body = render(OWNER, Spec.model_validate(
        {"workloads": [{"clusters": ["s1"], "manifests": [cm("a")]}]}), {})[0].body
    spoke.objects[("ConfigMap", "a")] = observed(body, res, uid="someone-else")
    out = await apply(spoke, [cm("a")])
    assert out["a"].message.startswith("conflict: ConfigMap demo/a on s1 is owned by another")
    assert spoke.applied == []


async def test_a_tenant_cluster_is_written_as_the_hub_namespaces_identity() -> None:
    spoke = FakeSpoke()
    spoke.access = AccessPolicy(tenant=True)
    bad = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "rb"}, "roleRef": {}, "subjects": []}
    out = await apply(spoke, [cm("a"), bad])
    assert out["a"].applied and out["rb"].applied  # the spoke's RBAC decides, not hmls
    assert spoke.writers == ["system:serviceaccount:demo:hmls-tenant"] * 2
    trusted = FakeSpoke()
    out = await apply(trusted, [cm("a"), bad])
    assert trusted.writers == [None] and not out["rb"].applied


def test_the_hub_cache_keeps_neither_managed_fields_nor_kubectls_last_applied_copy() -> None:
    raw = {"apiVersion": "tensorstack.dev/v1beta1", "kind": "HyperMLService",
           "metadata": {"name": "a", "namespace": "n", "resourceVersion": "7", "uid": "u",
                        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                        "annotations": {
                            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                            "hmls.tensorstack.dev/orphan-clusters": "spoke1"}},
           "spec": {"workloads": []}, "status": {"observedGeneration": 1}}
    kept = lean(raw)
    assert kept["metadata"] == {"name": "a", "namespace": "n", "resourceVersion": "7",
                                "uid": "u", "annotations": {
                                    "hmls.tensorstack.dev/orphan-clusters": "spoke1"}}
    assert kept["spec"] is raw["spec"] and kept["status"] is raw["status"]
    assert "managedFields" in raw["metadata"]  # the response itself is left as it came
    cached = Cached.of(raw)
    assert cached.body() == kept and cached.body() is not cached.body()  # a copy per read
    assert (cached.key, cached.uid, cached.resource_version) == ("n/a", "u", "7")


def test_the_hub_cache_routes_cluster_changes_from_the_fields_it_decoded_once() -> None:
    def cr(spec: dict[str, Any], status: dict[str, Any] | None = None,
           deleting: bool = False) -> Cached:
        meta = {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "1",
                **({"deletionTimestamp": "2026-12-04T00:00:00Z"} if deleting else {})}
        return Cached.of({"metadata": meta, "spec": spec, "status": status or {}})

    named = cr({"workloads": [{"clusters": ["spoke1"], "manifests": []}]},
               {"aggregatedStatus": [{"cluster": "spoke2"}],
                "pendingDeletions": [{"cluster": "spoke3"}],
                "traffic": {"ingressCluster": "ingress"}})
    assert named.clusters == {"spoke1", "spoke2", "spoke3", "ingress"}
    assert not named.follows_labels and not named.deleting
    selector = cr({"workloads": [{"clusterSelector": {"matchLabels": {"gpu": "a100"}}}]})
    assert selector.follows_labels and selector.clusters == frozenset()
    assert cr({"workloads": []}, deleting=True).deleting


# ----- the whole reconcile, against a fake hub and fake spokes ------------------------------
def hyper(*manifests: Obj, clusters: tuple[str, ...] = ("s1", "s2"), **spec: Any) -> Obj:
    return {"apiVersion": "tensorstack.dev/v1beta1", "kind": "HyperMLService",
            "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid,
                         "resourceVersion": "1", "generation": 1},
            "spec": {"workloads": [{"clusters": list(clusters),
                                    "manifests": list(manifests)}], **spec}}


class World:
    """A Reconciler between a FakeHub holding one HyperMLService and fake spokes."""

    def __init__(self, obj: Obj, *spokes: str) -> None:
        self.spokes = {n: FakeSpoke(n) for n in spokes or ("s1", "s2")}
        self.hub = FakeHub(obj)
        self.now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
        self.rec = Reconciler(hub=self.hub, fleet=FakeFleet(*self.spokes.values()),
                              metrics=Metrics(), now=lambda: self.now)

    async def reconcile(self, after: float = 0) -> Status:
        self.now += dt.timedelta(seconds=after)
        await self.rec.reconcile(f"{OWNER.namespace}/{OWNER.name}")
        return Status.of(self.hub.get(OWNER.namespace, OWNER.name))

    def edit(self, **spec: Any) -> None:
        stored = self.hub.objects[(OWNER.namespace, OWNER.name)]
        stored["spec"].update(spec)
        stored["metadata"]["generation"] += 1
        self.hub.version += 1
        stored["metadata"]["resourceVersion"] = str(self.hub.version)


def progressive(data: str) -> dict[str, Any]:
    return {"workloads": [{"clusters": ["s1", "s2"], "manifests": [cm("c", k=data)]}]}


async def test_a_status_is_written_once_and_not_again_when_nothing_changed() -> None:
    w = World(hyper(cm("a")))
    first = await w.reconcile()
    assert first.fully_applied and len(w.hub.patches) == 1
    assert FINALIZER in w.hub.objects[("demo", "svc")]["metadata"]["finalizers"]
    again = await w.reconcile(1)
    assert again == first and len(w.hub.patches) == 1  # nothing sent


async def test_after_a_halted_revision_the_next_reaches_every_cluster() -> None:
    """Issue 27, bug 1, through the reconciler: the halt of revision 2 does not survive into
    the status of revision 3 (the stored status is exactly the computed one)."""
    w = World(hyper(cm("c", k="1"), rollout={"strategy": "Progressive", "soakSeconds": 0,
                                             "progressDeadlineSeconds": 5}))
    await w.reconcile()
    assert (await w.reconcile(1)).rollout.state.last_good == 1  # type: ignore[union-attr]
    w.spokes["s1"].failures["c"] = errors.Invalid("bad value", status=422)  # revision 2
    w.edit(**progressive("2"))
    for _ in range(4):
        halted = await w.reconcile(3)
    assert halted.rollout and halted.rollout.state.halted == \
        "revision 2 halted: s1 not Ready within 5s"
    del w.spokes["s1"].failures["c"]
    w.edit(**progressive("3"))
    for _ in range(6):
        done = await w.reconcile(1)
    assert done.rollout is not None
    assert (done.rollout.state.current, done.rollout.state.halted) == (3, None)
    assert {c: (s.revision, s.phase) for c, s in done.rollout.state.steps.items()} == {
        "s1": (3, "Done"), "s2": (3, "Done")}
    stored = w.hub.objects[("demo", "svc")]["status"]["rollout"]
    assert "halted" not in stored


async def test_deleting_cleans_up_every_cluster_then_drops_the_finalizer() -> None:
    w = World(hyper(cm("a"), cm("b")))
    await w.reconcile()
    assert len(w.spokes["s1"].objects) == 2
    w.hub.objects[("demo", "svc")]["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    await w.reconcile()
    assert w.spokes["s1"].objects == {} and w.spokes["s2"].objects == {}
    assert w.hub.objects[("demo", "svc")]["metadata"]["finalizers"] == []
    assert sorted(m for _, r, m in w.hub.events if r == "CleanedUp") == sorted(
        f"deleted ConfigMap demo/{n} from cluster {c}" for c in ("s1", "s2") for n in "ab")


async def test_a_cluster_dropped_from_the_spec_is_pruned_after_the_status_is_written() -> None:
    w = World(hyper(cm("a")))
    await w.reconcile()
    w.edit(workloads=[{"clusters": ["s1"], "manifests": [cm("a")]}])
    status = await w.reconcile()
    assert w.spokes["s2"].objects == {} and {i.cluster for i in status.items} == {"s1"}
    assert ("Normal", "Pruned", "deleted ConfigMap demo/a from cluster s2") in w.hub.events


def _mlservice_world(*clusters: str, **spec: Any) -> World:
    """An MLService on ``clusters`` (s1 and s2), each Ready, routed through the ingress
    cluster "in"."""
    clusters = clusters or ("s1", "s2")
    mls = {"apiVersion": "tensorstack.dev/v1beta1", "kind": "MLService",
           "metadata": {"name": "m"}, "spec": {"replicas": 1}}
    w = World(hyper(mls, clusters=clusters,
                    traffic={"ingressCluster": "in", "recoverySeconds": 0}, **spec),
              *clusters, "in")
    for c in clusters:
        w.spokes[c].statuses["m"] = {
            "defaultRelease": "r", "releases": [{"name": "r", "url": f"http://m.demo.ksvc.{c}"}],
            "conditions": [{"type": "Ready", "status": "True"}]}
    return w

async def test_the_headingress_apply_reports_its_failures_as_any_apply() -> None:
    w = _mlservice_world("s1")
    w.spokes["in"].fail_all = errors.Forbidden("serviceentries is forbidden", status=403)
    status = await w.reconcile()
    cond = status.condition("TrafficReady")
    assert cond is not None and cond.reason == "IngressApplyFailed"
    failed = [m for _, r, m in w.hub.events if r == "ApplyFailed"]
    assert failed and all(m.startswith("in: ") and "forbidden by cluster in" in m
                          for m in failed)
    await w.reconcile(1)
    assert [m for _, r, m in w.hub.events if r == "ApplyFailed"] == failed  # not again


def _weights(status: Status) -> dict[str, int]:
    assert status.traffic is not None
    return {r.cluster: r.effective_weight for r in status.traffic.routes}


async def test_while_the_ingress_cannot_be_written_the_routes_stay_as_it_routes() -> None:
    w = _mlservice_world()
    assert _weights(await w.reconcile()) == {"s1": 50, "s2": 50}
    w.spokes["in"].fail_all = errors.Unreachable("request timed out")
    w.spokes["s1"].objects[("MLService", "m")] = replace(
        w.spokes["s1"].objects[("MLService", "m")], status_json=json.dumps(
            {"conditions": [{"type": "Ready", "status": "False"}]}))
    status = await w.reconcile(1)
    cond = status.condition("TrafficReady")
    assert cond is not None and cond.reason == "IngressApplyFailed"
    assert _weights(status) == {"s1": 50, "s2": 50}  # what the ingress still does
    assert status.traffic is not None and len(status.traffic.objects) == 3
    w.spokes["in"].fail_all = None
    assert _weights(await w.reconcile(1)) == {"s1": 0, "s2": 100}


async def test_a_drain_waits_for_the_ingress_to_drop_its_cluster() -> None:
    """A rollout step drains its cluster before applying to it: with the ingress unwritable it
    must not go on to apply while the live routes still send traffic there (it did: the
    status recorded the planned routes whether or not they were written)."""
    rollout = {"strategy": "Progressive", "soakSeconds": 0, "progressDeadlineSeconds": 60}
    w = _mlservice_world(rollout=rollout)
    for _ in range(3):
        status = await w.reconcile(1)
    assert status.rollout is not None and status.rollout.state.last_good == 1
    assert _weights(status) == {"s1": 50, "s2": 50}
    w.spokes["in"].fail_all = errors.Unreachable("request timed out")
    applied = len(w.spokes["s1"].applied)
    stored = w.hub.objects[("demo", "svc")]
    w.edit(workloads=[{**stored["spec"]["workloads"][0], "manifests": [
        {**stored["spec"]["workloads"][0]["manifests"][0], "spec": {"replicas": 2}}]}])
    for _ in range(3):
        status = await w.reconcile(1)
        assert status.rollout is not None
        assert status.rollout.state.steps["s1"].phase == "Draining"
    assert len(w.spokes["s1"].applied) == applied  # revision 2 is not sent to s1
    w.spokes["in"].fail_all = None
    outcome = await w.rec.reconcile("demo/svc")  # the ingress drops s1 ...
    assert outcome.requeue_after == 0  # ... and the drain goes on at once
    status = await w.reconcile(0)
    assert status.rollout is not None and status.rollout.state.steps["s1"].phase != "Draining"
    assert _weights(status) == {"s1": 0, "s2": 100}
