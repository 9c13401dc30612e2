"""Progressive rollouts on the hub: workload revisions as ControllerRevisions.

Each HyperMLService with ``spec.rollout.strategy: Progressive`` has its ``spec.workloads``
recorded as numbered ``apps/v1`` ControllerRevisions in its namespace, owned by it (an
ownerReference, and the owner labels, which this controller lists by).  The controller is the
only writer of them, so they are read from the hub once per HyperMLService and then kept in
step by its own writes.  History is bounded by ``revisionHistoryLimit``; a revision that the
rollout state still references is never deleted.  Going back to earlier workloads (``hmls
rollout undo``) reuses that revision under a new number, as Deployments do; its earlier
numbers are kept in the annotation ``hmls.tensorstack.dev/revision-history``, so the rollout
state's references to them follow it (``State.renumbered``).  ``history`` gives the plan
phase (``hmls.domain.plan``) what it renders from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hmls.domain.models import API_VERSION, KIND, REVISION_HISTORY_ANNOTATION, Owner
from hmls.domain.plan import History
from hmls.domain.render import content_hash, owner_labels
from hmls.domain.rollout import State
from hmls.domain.status import Status
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
    return Revision(number, obj["metadata"]["name"], fingerprint(data["workloads"]),
                    data["workloads"], history)


def aliases(known: dict[int, Revision]) -> dict[int, int]:
    """Each earlier number of a renumbered revision -> its number now."""
    return {old: r.number for r in known.values() for old in r.history}


def fingerprint(workloads: list[Any]) -> str:
    """The digest that identifies a revision's workloads."""
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
        digest = fingerprint(workloads)
        number, found = _placed(known, digest)
        if found is not None and found.number == number:
            return found
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


def _placed(known: dict[int, Revision], digest: str) -> tuple[int, Revision | None]:
    """The number workloads of this digest have as the newest revision, and the revision
    that already holds them (the newest itself: nothing to record; an older one: it is
    renumbered; None: a new revision)."""
    latest = max(known, default=0)
    found = next((r for r in known.values() if r.digest == digest), None)
    return (latest if found is not None and found.number == latest else latest + 1), found


def planned(known: dict[int, Revision], workloads: list[Any]) -> History:
    """The History ``history`` would give for these workloads, recording nothing (``hmls
    diff``): the newest revision if they are its workloads, an older one renumbered if they
    are its, else a new one."""
    number, found = _placed(known, fingerprint(workloads))
    by_number = {n: r.workloads for n, r in known.items()}
    if found is not None and found.number == number:
        return History(number, by_number, aliases(known))
    renumbered = {found.number: number, **dict.fromkeys(found.history, number)} if found else {}
    by_number = {n: w for n, w in by_number.items() if n not in renumbered} | {
        number: workloads}
    return History(number, by_number, aliases(known) | renumbered)


def _selector(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in owner_labels(owner).items())


async def history(revisions: Revisions, owner: Owner, workloads: list[Any], *,
                  previous: Status, limit: int) -> History:
    """Record the current workloads as the newest revision (history beyond ``limit`` that the
    stored rollout state does not reference is deleted) and return the revisions the plan
    renders from."""
    known = await revisions.of(owner)
    state = (previous.rollout.state if previous.rollout else State()).renumbered(
        aliases(known))
    current = await revisions.record(owner, workloads, keep=state.referenced(), limit=limit)
    return History(current.number, {n: r.workloads for n, r in known.items()}, aliases(known))
