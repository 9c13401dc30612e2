"""Progressive rollouts on the hub: workload revisions as ControllerRevisions, and the part of
one reconcile that decides which revision each cluster is rendered at.

Each HyperMLService with ``spec.rollout.strategy: Progressive`` has its ``spec.workloads``
recorded as numbered ``apps/v1`` ControllerRevisions in its namespace, owned by it (an
ownerReference, and the owner labels, which this controller lists by).  The controller is the
only writer of them, so they are read from the hub once per HyperMLService and then kept in
step by its own writes.  History is bounded by ``revisionHistoryLimit``; a revision that the
rollout state still references is never deleted.  Going back to earlier workloads (``hmls
rollout undo``) reuses that revision under a new number, as Deployments do; its earlier
numbers are kept in the annotation ``hmls.tensorstack.dev/revision-history``, so the rollout
state's references to them follow it (``State.renumbered``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from hmls.domain import rollout as rollout_mod
from hmls.domain.models import (
    API_VERSION,
    KIND,
    REVISION_HISTORY_ANNOTATION,
    InvalidSpec,
    Owner,
    Spec,
    parse_spec,
)
from hmls.domain.render import Desired, Fleet, content_hash, owner_labels, placements, render
from hmls.domain.status import Behind, ItemResult, Status
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import CONTROLLER_REVISIONS

log = logging.getLogger("hmls.rollouts")


@dataclass(frozen=True)
class Revision:
    number: int
    name: str
    digest: str
    workloads: list[Any]
    history: tuple[int, ...] = ()
    """The numbers it had before (it was renumbered when its workloads came back)."""


def _revision(obj: Obj) -> Revision | None:
    data = obj.get("data") or {}
    number = obj.get("revision")
    if not isinstance(number, int) or not isinstance(data.get("workloads"), list):
        return None
    annotation = ((obj["metadata"].get("annotations") or {})
                  .get(REVISION_HISTORY_ANNOTATION) or "")
    history = tuple(int(n) for n in annotation.split(",") if n.strip().isdigit())
    return Revision(number, obj["metadata"]["name"], _fingerprint(data["workloads"]),
                    data["workloads"], history)


def aliases(known: dict[int, Revision]) -> dict[int, int]:
    """Each earlier number of a renumbered revision -> its number now."""
    return {old: r.number for r in known.values() for old in r.history}


def _fingerprint(workloads: list[Any]) -> str:
    return content_hash({"workloads": workloads})


class Revisions:
    def __init__(self, hub: ClusterClient) -> None:
        self._hub = hub
        self._by_uid: dict[str, dict[int, Revision]] = {}

    async def of(self, owner: Owner) -> dict[int, Revision]:
        known = self._by_uid.get(owner.uid)
        if known is None:
            listed, _ = await self._hub.list(CONTROLLER_REVISIONS, namespace=owner.namespace,
                                             label_selector=_selector(owner))
            known = {r.number: r for r in map(_revision, listed) if r is not None}
            self._by_uid[owner.uid] = known
        return known

    async def record(self, owner: Owner, workloads: list[Any], *, keep: set[int],
                     limit: int) -> Revision:
        """The revision of these workloads, made the newest (created, or renumbered when they
        equal an older one); history beyond ``limit`` that ``keep`` does not need is deleted."""
        known = await self.of(owner)
        digest = _fingerprint(workloads)
        latest = max(known, default=0)
        found = next((r for r in known.values() if r.digest == digest), None)
        if found is not None and found.number == latest:
            return found
        number = latest + 1
        if found is not None:
            history = (*found.history, found.number)
            await self._hub.patch(CONTROLLER_REVISIONS, owner.namespace, found.name, {
                "metadata": {"annotations": {
                    REVISION_HISTORY_ANNOTATION: ",".join(map(str, history))}},
                "revision": number})
            del known[found.number]
            made = Revision(number, found.name, digest, found.workloads, history)
        else:
            name = f"{owner.name[:200]}-{digest[:10]}"
            await self._hub.create(CONTROLLER_REVISIONS, owner.namespace, {
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": owner.namespace,
                             "labels": owner_labels(owner),
                             "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND,
                                                  "name": owner.name, "uid": owner.uid,
                                                  "controller": True}]},
                "data": {"workloads": workloads}, "revision": number})
            made = Revision(number, name, digest, workloads)
        known[number] = made
        log.info("%s: recorded revision %d (%s)", owner.key, number, made.name)
        for old in sorted(known)[:-limit]:
            if old not in keep | {number}:
                await self._delete(owner, known.pop(old))
        return made

    async def _delete(self, owner: Owner, revision: Revision) -> None:
        await self._hub.delete(CONTROLLER_REVISIONS, owner.namespace, revision.name)

    async def delete_all(self, owner: Owner) -> None:
        """Delete every revision of a HyperMLService that is going (nothing cascades on a hub
        without a garbage collector) and forget it."""
        for revision in list((await self.of(owner)).values()):
            await self._delete(owner, revision)
        self._by_uid.pop(owner.uid, None)


def _selector(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in owner_labels(owner).items())


@dataclass
class Prepared:
    """A Progressive reconcile between rendering and observing."""

    rollout: rollout_mod.Rollout
    desired: list[Desired]
    order: list[str]
    rendered_at: dict[str, int | None]
    """The revision each cluster was rendered (and applied) at in this reconcile: a step
    that ``finish`` starts applies at the next one."""

    def behind(self, plan: rollout_mod.Plan) -> Behind:
        """The clusters this reconcile did not apply the current revision to."""
        return Behind(plan.state.current, [c for c in self.order
                                           if self.rendered_at.get(c) != plan.state.current],
                      bool(plan.state.halted))

    def finish(self, items: list[ItemResult], previous: Status) -> rollout_mod.Plan:
        serving = previous.traffic.serving() if previous.traffic else set()
        seen = {}
        for cluster in self.order:
            mine = [i for i in items if i.cluster == cluster]
            ready = bool(mine) and all(
                i.applied and not i.written and (i.health is None or i.health.ready)
                for i in mine)
            seen[cluster] = rollout_mod.Seen(ready, cluster in serving)
        return self.rollout.finish(seen)


def _clusters(chosen: list[list[str]]) -> list[str]:
    out: list[str] = []
    for clusters in chosen:
        out += [c for c in clusters if c not in out]
    return out


async def prepare(revisions: Revisions, obj: Obj, owner: Owner, spec: Spec, fleet: Fleet,
                  previous: Status, now: dt.datetime) -> Prepared:
    """Record the current revision, begin this reconcile's rollout and render every cluster at
    the revision it runs."""
    known = await revisions.of(owner)
    state = (previous.rollout.state if previous.rollout else rollout_mod.State()).renumbered(
        aliases(known))
    raw_spec = obj.get("spec") or {}
    current = await revisions.record(owner, list(raw_spec.get("workloads") or []),
                                     keep=state.referenced(),
                                     limit=spec.rollout.revision_history_limit)
    state = state.renumbered(aliases(known))
    rendered: dict[int, dict[str, list[Desired]]] = {current.number: _by_cluster(
        render(owner, spec, fleet))}
    for revision in state.referenced() - {current.number}:
        found = known.get(revision)
        try:
            old = parse_spec({**raw_spec, "workloads": found.workloads}) if found else None
        except InvalidSpec:
            old = None
        if old is None:  # deleted behind hmls's back: it cannot be kept, the cluster moves on
            log.warning("%s: revision %d is gone; its clusters get revision %d", owner.key,
                        revision, current.number)
            continue
        rendered[revision] = _by_cluster(render(owner, old, fleet))
    clusters = _clusters(placements(spec, fleet))
    now_items = rendered[current.number]
    unchanged = {c for c, s in state.steps.items() if s.revision is not None and (
        s.revision not in rendered
        or _digest(rendered[s.revision].get(c, [])) == _digest(now_items.get(c, [])))}
    rollout = rollout_mod.begin(spec=spec.rollout, state=state, clusters=clusters,
                                current=current.number, unchanged=unchanged,
                                known=set(rendered), traffic=spec.traffic is not None, now=now)
    desired: list[Desired] = []
    runs = rollout.runs()
    for cluster, number in runs.items():
        if number is not None and number in rendered:
            desired += rendered[number].get(cluster, [])
    return Prepared(rollout, desired, rollout.clusters,
                    {c: n if n in rendered else None for c, n in runs.items()})


def _by_cluster(desired: list[Desired]) -> dict[str, list[Desired]]:
    out: dict[str, list[Desired]] = {}
    for d in desired:
        out.setdefault(d.cluster, []).append(d)
    return out


def _digest(items: list[Desired]) -> tuple[str, ...]:
    return tuple(sorted(f"{d.ref}:{d.hash}:{d.error}" for d in items))
