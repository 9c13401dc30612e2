"""Readiness of spoke objects, one small pure function per kind, agreeing with kstatus.

Where this sits: the reconciler observes every object it applied on a spoke, and
``hmls.domain.status`` folds ``health(obj)`` of each into the item, cluster and traffic
verdicts.  A watch cache can keep only what this module reads (``apiVersion``, ``kind``,
``metadata.generation``, ``metadata.deletionTimestamp``, ``status`` and
``spec_subset(...)`` of the spec) and get the same verdicts; the unit tests check that.

The rules follow kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, ``Compute``):
``Health.ready`` is True exactly when kstatus reports ``Current``.  Its other results
(InProgress, Failed, Terminating, and an error for a malformed object) are all "not ready";
``Health.reason`` says why in a few words.  The order of the checks is kstatus's:

1. Generic rules, for every kind: ``metadata.deletionTimestamp`` set -> "terminating";
   ``status.observedGeneration`` present and different from ``metadata.generation`` -> not
   ready; a ``Reconciling=True`` or ``Stalled=True`` condition -> not ready.
2. The rule of the kind, for the built-in kinds in ``_KINDS`` (matched by API group and
   kind, any version).  ConfigMap, Secret, CronJob and PodDisruptionBudget have no rule
   beyond the generic one, exactly as in kstatus.
3. Any other kind (custom resources): the first ``Ready`` condition whose status is
   True, False or Unknown decides.
4. Otherwise ``health`` returns None: hmls has no readiness rule for the object, kstatus
   would call it Current, and callers count it ready once it is applied.  A custom
   resource without a Ready condition gets None unless a generic rule (1.) says not ready.

Service follows kstatus too: a LoadBalancer is ready once it has a cluster IP; kstatus does
not wait for ``status.loadBalancer.ingress`` and neither does hmls.

MLService (group tensorstack.dev) is deliberately stricter than kstatus: it must report
a status and a Ready=True condition, and Paused=True means not ready.

Deliberate differences from kstatus, all on objects the API server never sends:
a JSON null is treated as an absent field (kstatus fails on a null
``observedGeneration`` or ``deletionTimestamp``), and a malformed object is a "not ready"
value here where kstatus returns an error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]
Path = tuple[str, ...]

_MAX_INT32 = 2**31 - 1
"""Deployment controller's "no progress deadline" value (and kstatus's default)."""


@dataclass(frozen=True)
class Health:
    ready: bool
    reason: str
    failed: bool = False
    """kstatus would say Failed: the object's own controller gave up (a ``Stalled=True``
    condition, a Deployment past its progress deadline, a failed Job); it will not get Ready
    without a person."""


def condition(status: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """The first condition of type ``ctype`` in ``status.conditions``, or None."""
    conds = (status or {}).get("conditions")
    if not isinstance(conds, list | tuple):
        return None
    for cond in conds:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond if isinstance(cond, dict) else dict(cond)
    return None


def health(obj: Mapping[str, Any] | None) -> Health | None:
    """Readiness of one (possibly trimmed) object; None when hmls has no rule for it."""
    if obj is None:
        return None
    key = _group_kind(obj.get("apiVersion"), obj.get("kind"))
    try:
        conds = _parse_conditions(obj)
        verdict = _generic(obj, conds)
        if verdict is not None:
            return verdict
        rule = _KINDS.get(key)
        if rule is None:
            return _ready_condition(conds)
        return rule.judge(obj, conds)
    except _MalformedError as err:
        return Health(False, f"malformed object: {err}")


def spec_subset(api_version: str, kind: str, spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The part of ``spec`` that ``health`` reads for this kind; None when it reads none.

    ``health`` gives the same answer for an object whose spec is replaced by this subset.
    """
    rule = _KINDS.get(_group_kind(api_version, kind))
    if rule is None or not rule.spec:
        return None
    out: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        for path in rule.spec:
            _copy_path(spec, out, path)
    return out


# -- reading raw objects -------------------------------------------------------------------


class _MalformedError(Exception):
    """The object has a shape the API server never produces; kstatus returns an error."""


@dataclass(frozen=True)
class _Cond:
    type: str
    status: str
    reason: str
    message: str

    def detail(self) -> str:
        return self.message or self.reason


def _group_kind(api_version: object, kind: object) -> tuple[str, str]:
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    return group, kind if isinstance(kind, str) else ""


def _walk(obj: Obj, path: Path) -> tuple[bool, Any]:
    """(found, value) at ``path``; a null counts as absent; a non-object step is malformed."""
    cur: Any = obj
    for i, key in enumerate(path):
        if cur is None:
            return False, None
        if not isinstance(cur, Mapping):
            raise _MalformedError(f"{'.'.join(path[:i])} is not an object")
        if key not in cur:
            return False, None
        cur = cur[key]
    return cur is not None, cur


def _lenient(obj: Obj, path: Path) -> Any:
    """Value at ``path`` or None, never raising: kstatus's Get*Field lookups."""
    try:
        return _walk(obj, path)[1]
    except _MalformedError:
        return None


def _int(obj: Obj, path: Path, default: int) -> int:
    value = _lenient(obj, path)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(obj: Obj, path: Path, default: str) -> str:
    value = _lenient(obj, path)
    return value if isinstance(value, str) else default


def _bool(obj: Obj, path: Path, default: bool) -> bool:
    value = _lenient(obj, path)
    return value if isinstance(value, bool) else default


def _strict_int(obj: Obj, path: Path) -> int | None:
    found, value = _walk(obj, path)
    if not found:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _MalformedError(f"{'.'.join(path)} is not an integer")
    return value


def _strict_str(obj: Obj, path: Path) -> str | None:
    found, value = _walk(obj, path)
    if not found:
        return None
    if not isinstance(value, str):
        raise _MalformedError(f"{'.'.join(path)} is not a string")
    return value


def _parse_conditions(obj: Obj) -> list[_Cond]:
    """``status.conditions`` as kstatus reads them: nulls skipped, wrong shapes malformed."""
    found, raw = _walk(obj, ("status", "conditions"))
    if not found:
        return []
    if not isinstance(raw, list | tuple):
        raise _MalformedError("status.conditions is not a list")
    conds = []
    for i, item in enumerate(raw):
        if item is None:
            continue
        if not isinstance(item, Mapping):
            raise _MalformedError(f"status.conditions[{i}] is not an object")
        fields = []
        for name in ("type", "status", "reason", "message"):
            value = item.get(name)
            if value is not None and not isinstance(value, str):
                raise _MalformedError(f"status.conditions[{i}].{name} is not a string")
            fields.append(value or "")
        conds.append(_Cond(*fields))
    return conds


def _has(conds: list[_Cond], ctype: str, status: str) -> _Cond | None:
    """The first condition of that type with that status (kstatus's getConditionWithStatus)."""
    return next((c for c in conds if c.type == ctype and c.status == status), None)


def _copy_path(src: Obj, dst: dict[str, Any], path: Path) -> None:
    cur: Any = src
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return
        cur = cur[key]
    for key in path[:-1]:
        dst = dst.setdefault(key, {})
    dst[path[-1]] = copy.deepcopy(cur)


# -- generic rules --------------------------------------------------------------------------


def _generic(obj: Obj, conds: list[_Cond]) -> Health | None:
    """kstatus's checks for every kind, before any kind-specific rule; None: undecided."""
    if _strict_str(obj, ("metadata", "deletionTimestamp")):
        return Health(False, "terminating")
    generation = _strict_int(obj, ("metadata", "generation"))
    observed = _strict_int(obj, ("status", "observedGeneration"))
    if generation is not None and observed is not None and observed != generation:
        op = "<" if observed < generation else ">"
        return Health(False, f"status.observedGeneration {observed} {op} metadata.generation {generation}")
    for c in conds:
        if c.type in ("Reconciling", "Stalled") and c.status == "True":
            return Health(False, f"{c.type}: {c.detail()}" if c.detail() else c.type,
                          failed=c.type == "Stalled")
    return None


def _ready_condition(conds: list[_Cond]) -> Health | None:
    """Custom resources: the first Ready condition with a known status decides."""
    for c in conds:
        if c.type != "Ready":
            continue
        if c.status == "True":
            return Health(True, "Ready")
        if c.status in ("False", "Unknown"):
            return Health(False, c.detail() or f"Ready is {c.status}")
    return None


# -- one rule per kind ----------------------------------------------------------------------


def _deployment(obj: Obj, conds: list[_Cond]) -> Health:
    # Without a progress deadline the controller never sets Progressing; kstatus then
    # takes the rollout as progressing.
    progressing = _int(obj, ("spec", "progressDeadlineSeconds"), _MAX_INT32) == _MAX_INT32
    available = False
    for c in conds:
        if c.type == "Progressing":
            if c.reason == "ProgressDeadlineExceeded":
                return Health(False, "progress deadline exceeded", failed=True)
            if c.status == "True" and c.reason == "NewReplicaSetAvailable":
                progressing = True
        elif c.type == "Available" and c.status == "True":
            available = True
    want = _int(obj, ("spec", "replicas"), 1)
    have = _int(obj, ("status", "replicas"), 0)
    updated = _int(obj, ("status", "updatedReplicas"), 0)
    ready = _int(obj, ("status", "readyReplicas"), 0)
    avail = _int(obj, ("status", "availableReplicas"), 0)
    if want > have:
        return Health(False, f"{have} of {want} replicas created")
    if want > updated:
        return Health(False, f"{updated} of {want} replicas updated")
    if have > want:
        return Health(False, f"{have - want} old replicas pending termination")
    if updated > avail:
        return Health(False, f"{avail} of {updated} replicas available")
    if want > ready:
        return Health(False, f"{ready} of {want} replicas ready")
    if not progressing:
        return Health(False, "new ReplicaSet not available yet")
    if not available:
        return Health(False, "Deployment not Available")
    return Health(True, "Ready")


def _statefulset(obj: Obj, conds: list[_Cond]) -> Health:
    if _str(obj, ("spec", "updateStrategy", "type"), "") == "OnDelete":
        return Health(True, "OnDelete update strategy")
    want = _int(obj, ("spec", "replicas"), 1)
    have = _int(obj, ("status", "replicas"), 0)
    ready = _int(obj, ("status", "readyReplicas"), 0)
    current = _int(obj, ("status", "currentReplicas"), 0)
    updated = _int(obj, ("status", "updatedReplicas"), 0)
    partition = _int(obj, ("spec", "updateStrategy", "rollingUpdate", "partition"), -1)
    if want > have:
        return Health(False, f"{have} of {want} replicas created")
    if want > ready:
        return Health(False, f"{ready} of {want} replicas ready")
    if have > want:
        return Health(False, f"{have - want} extra replicas pending termination")
    if partition != -1:
        if updated < want - partition:
            return Health(False, f"{updated} of {want - partition} replicas updated (partition {partition})")
        return Health(True, "Ready")
    if want > current:
        return Health(False, f"{current} of {want} replicas at the current revision")
    if _str(obj, ("status", "currentRevision"), "") != _str(obj, ("status", "updateRevision"), ""):
        return Health(False, "update revision not rolled out yet")
    return Health(True, "Ready")


def _daemonset(obj: Obj, conds: list[_Cond]) -> Health:
    # Unlike the generic rule, a DaemonSet must have both generations set.
    if _strict_int(obj, ("metadata", "generation")) is None:
        return Health(False, "metadata.generation not set")
    if _strict_int(obj, ("status", "observedGeneration")) is None:
        return Health(False, "status.observedGeneration not reported yet")
    desired = _int(obj, ("status", "desiredNumberScheduled"), -1)
    if desired == -1:
        return Health(False, "status.desiredNumberScheduled not reported yet")
    for field, what in (("currentNumberScheduled", "scheduled"), ("updatedNumberScheduled", "updated"),
                        ("numberAvailable", "available"), ("numberReady", "ready")):
        got = _int(obj, ("status", field), 0)
        if desired > got:
            return Health(False, f"{got} of {desired} pods {what}")
    return Health(True, "Ready")


def _replicaset(obj: Obj, conds: list[_Cond]) -> Health:
    if _has(conds, "ReplicaFailure", "True"):
        return Health(False, "replica failure")
    want = _int(obj, ("spec", "replicas"), 1)
    for field, what in (("fullyLabeledReplicas", "labelled"), ("availableReplicas", "available"),
                        ("readyReplicas", "ready")):
        got = _int(obj, ("status", field), 0)
        if want > got:
            return Health(False, f"{got} of {want} replicas {what}")
    have = _int(obj, ("status", "replicas"), 0)
    if have > want:
        return Health(False, f"{have - want} extra replicas pending termination")
    return Health(True, "Ready")


def _job(obj: Obj, conds: list[_Cond]) -> Health:
    """Ready once started (running counts), complete or suspended on purpose; not if failed."""
    parallelism = _int(obj, ("spec", "parallelism"), 1)
    completions = _int(obj, ("spec", "completions"), parallelism)
    succeeded = _int(obj, ("status", "succeeded"), 0)
    failed = _int(obj, ("status", "failed"), 0)
    for c in conds:
        if c.status != "True":
            continue
        if c.type == "Complete":
            return Health(True, f"complete: {succeeded} of {completions} succeeded")
        if c.type == "Failed":
            return Health(False, f"failed: {failed} of {completions} failed", failed=True)
        if c.type == "Suspended" and _bool(obj, ("spec", "suspend"), False):
            return Health(True, "suspended")
    if not _str(obj, ("status", "startTime"), ""):
        return Health(False, "not started yet")
    active = _int(obj, ("status", "active"), 0)
    return Health(True, f"running: {active} active, {succeeded} succeeded, {failed} failed")


def _pod(obj: Obj, conds: list[_Cond]) -> Health:
    """Ready when Running with Ready=True, or finished (kstatus counts Failed as Current)."""
    phase = _str(obj, ("status", "phase"), "")
    if phase in ("Succeeded", "Failed"):
        return Health(True, f"finished: {phase}")
    if phase == "Running":
        if _has(conds, "Ready", "True"):
            return Health(True, "Ready")
        looping = _crash_looping(obj)
        if looping:
            return Health(False, "crash-looping: " + ", ".join(looping))
        return Health(False, "running, not Ready")
    if phase == "Pending":
        scheduled = _has(conds, "PodScheduled", "False")
        if scheduled and scheduled.reason == "Unschedulable":
            return Health(False, "unschedulable")
        return Health(False, "pending")
    if not phase:
        return Health(False, "no phase reported yet")
    return Health(False, f"unknown phase {phase}")


def _crash_looping(obj: Obj) -> list[str]:
    statuses = _lenient(obj, ("status", "containerStatuses"))
    names = []
    for cs in statuses if isinstance(statuses, list) else []:
        if (isinstance(cs, Mapping) and isinstance(cs.get("name"), str)
                and _str(cs, ("state", "waiting", "reason"), "") == "CrashLoopBackOff"):
            names.append(cs["name"])
    return names


def _pvc(obj: Obj, conds: list[_Cond]) -> Health:
    phase = _str(obj, ("status", "phase"), "unknown")
    return Health(True, "Bound") if phase == "Bound" else Health(False, f"phase {phase}, not Bound")


def _service(obj: Obj, conds: list[_Cond]) -> Health:
    """Ready unless a LoadBalancer has no cluster IP (kstatus does not wait for ingress)."""
    if (_str(obj, ("spec", "type"), "ClusterIP") == "LoadBalancer"
            and not _str(obj, ("spec", "clusterIP"), "")):
        return Health(False, "LoadBalancer has no cluster IP yet")
    return Health(True, "Ready")


def _crd(obj: Obj, conds: list[_Cond]) -> Health:
    for c in conds:
        if c.type == "NamesAccepted" and c.status == "False":
            return Health(False, f"names not accepted: {c.detail()}")
        if c.type == "Established":
            if c.status == "False" and c.reason != "Installing":
                return Health(False, f"not established: {c.detail()}")
            if c.status == "True":
                return Health(True, "Established")
    return Health(False, "installing")


def _always(obj: Obj, conds: list[_Cond]) -> None:
    """Kinds kstatus calls Current once the generic rules pass; no Ready-condition fallback."""
    return None


def _mlservice(obj: Obj, conds: list[_Cond]) -> Health:
    """Ready when the Ready condition is True and the service is not paused."""
    status = obj.get("status")
    if not status:
        return Health(False, "no status reported yet")
    paused = condition(status, "Paused")
    if paused and paused.get("status") == "True":
        return Health(False, "paused")
    ready = condition(status, "Ready")
    if ready is None:
        return Health(False, "no Ready condition reported yet")
    if ready.get("status") != "True":
        detail = ready.get("message") or ready.get("reason") or "Ready is " + str(ready.get("status"))
        return Health(False, str(detail))
    return Health(True, "Ready")


@dataclass(frozen=True)
class _Rule:
    judge: Callable[[Obj, list[_Cond]], Health | None]
    spec: tuple[Path, ...] = ()
    """Paths under ``spec`` that ``judge`` reads (what ``spec_subset`` keeps)."""


_DEPLOYMENT = _Rule(_deployment, (("replicas",), ("progressDeadlineSeconds",)))
_DAEMONSET = _Rule(_daemonset)
_REPLICASET = _Rule(_replicaset, (("replicas",),))
_ALWAYS = _Rule(_always)

_KINDS: dict[tuple[str, str], _Rule] = {
    ("apps", "Deployment"): _DEPLOYMENT,
    ("extensions", "Deployment"): _DEPLOYMENT,
    ("apps", "StatefulSet"): _Rule(_statefulset, (
        ("replicas",), ("updateStrategy", "type"), ("updateStrategy", "rollingUpdate", "partition"))),
    ("apps", "DaemonSet"): _DAEMONSET,
    ("extensions", "DaemonSet"): _DAEMONSET,
    ("apps", "ReplicaSet"): _REPLICASET,
    ("extensions", "ReplicaSet"): _REPLICASET,
    ("batch", "Job"): _Rule(_job, (("parallelism",), ("completions",), ("suspend",))),
    ("", "Pod"): _Rule(_pod),
    ("", "PersistentVolumeClaim"): _Rule(_pvc),
    ("", "Service"): _Rule(_service, (("type",), ("clusterIP",))),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _Rule(_crd),
    ("", "ConfigMap"): _ALWAYS,
    ("", "Secret"): _ALWAYS,
    ("batch", "CronJob"): _ALWAYS,
    ("policy", "PodDisruptionBudget"): _ALWAYS,
    ("tensorstack.dev", "MLService"): _Rule(_mlservice),
}
