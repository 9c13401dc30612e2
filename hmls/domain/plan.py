"""The plan phase of a reconcile: what every cluster should hold, decided from values alone.

Pure.  From the spec, the fleet's labels, the stored status and (for a Progressive
HyperMLService) the recorded revisions, ``plan`` chooses the clusters, begins the rollout
(which revision each cluster runs in this reconcile) and renders the desired objects.  The
reconciler then applies them and hands what it observed back to ``Plan.finish`` for the
rollout's next state.  ``hmls diff`` can run the same function the controller runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hmls.domain import rollout as rollout_mod
from hmls.domain.analysis import Measurement
from hmls.domain.models import InvalidSpec, Owner, Spec, parse_spec
from hmls.domain.render import Desired, Fleet, placements, render
from hmls.domain.status import Behind, ItemResult, Status


@dataclass(frozen=True)
class History:
    """A Progressive HyperMLService's recorded revisions (ControllerRevisions on the hub)."""

    current: int
    """The number of the revision the spec's workloads are now."""
    workloads: Mapping[int, list[Any]]
    """Each recorded revision's ``spec.workloads``."""
    aliases: Mapping[int, int]
    """A renumbered revision's earlier numbers -> its number now."""


@dataclass
class Plan:
    desired: list[Desired]
    chosen: list[list[str]]
    """The clusters each workload goes to (``placements``)."""
    rollout: rollout_mod.Rollout | None = None
    """Progressive only: this reconcile's rollout, begun."""
    rendered_at: Mapping[str, int | None] | None = None
    """Progressive only: the revision each cluster was rendered (and is applied) at in this
    reconcile; a step that ``finish`` starts applies at the next one."""

    def behind(self, step: rollout_mod.Plan) -> Behind:
        """The clusters this reconcile did not apply the current revision to."""
        assert self.rollout is not None and self.rendered_at is not None
        return Behind(step.state.current, [c for c in self.rollout.clusters
                                           if self.rendered_at.get(c) != step.state.current],
                      bool(step.state.halted))

    def finish(self, items: list[ItemResult], previous: Status,
               measured: Mapping[str, Sequence[Measurement]] | None = None
               ) -> rollout_mod.Plan | None:
        """The rollout's next state from what the apply observed and the metrics measured
        (None without a rollout)."""
        if self.rollout is None:
            return None
        serving = previous.traffic.serving() if previous.traffic else set()
        seen = {}
        for cluster in self.rollout.clusters:
            mine = [i for i in items if i.cluster == cluster]
            ready = bool(mine) and all(
                i.applied and not i.written and (i.health is None or i.health.ready)
                for i in mine)
            seen[cluster] = rollout_mod.Seen(ready, cluster in serving,
                                             any(i.written for i in mine))
        return self.rollout.finish(seen, measured)


def plan(*, owner: Owner, spec: Spec, raw_spec: Mapping[str, Any], fleet: Fleet,
         previous: Status, history: History | None, now: dt.datetime) -> Plan:
    """Placements, the rollout begun (with ``history``: Progressive) and the desired objects,
    every cluster rendered at the revision it runs."""
    chosen = placements(spec, fleet)
    if history is None:
        return Plan(render(owner, spec, fleet), chosen)
    state = (previous.rollout.state if previous.rollout else rollout_mod.State()).renumbered(
        history.aliases)
    current = history.current
    rendered: dict[int, dict[str, list[Desired]]] = {current: _by_cluster(
        render(owner, spec, fleet))}
    for revision in state.referenced() - {current}:
        workloads = history.workloads.get(revision)
        try:
            old = parse_spec({**raw_spec, "workloads": workloads}) if workloads else None
        except InvalidSpec:
            old = None
        if old is not None:  # else deleted behind hmls's back: its clusters move on
            rendered[revision] = _by_cluster(render(owner, old, fleet))
    clusters = list(dict.fromkeys(c for targets in chosen for c in targets))
    now_items = rendered[current]
    unchanged = {c for c, s in state.steps.items() if s.revision is not None and (
        s.revision not in rendered
        or _digest(rendered[s.revision].get(c, [])) == _digest(now_items.get(c, [])))}
    rollout = rollout_mod.begin(spec=spec.rollout, state=state, clusters=clusters,
                                current=current, unchanged=unchanged, known=set(rendered),
                                traffic=spec.traffic is not None, now=now)
    desired: list[Desired] = []
    runs = rollout.runs()
    for cluster, number in runs.items():
        if number is not None and number in rendered:
            desired += rendered[number].get(cluster, [])
    return Plan(desired, chosen, rollout,
                {c: n if n in rendered else None for c, n in runs.items()})


def _by_cluster(desired: list[Desired]) -> dict[str, list[Desired]]:
    out: dict[str, list[Desired]] = {}
    for d in desired:
        out.setdefault(d.cluster, []).append(d)
    return out


def _digest(items: list[Desired]) -> tuple[str, ...]:
    return tuple(sorted(f"{d.ref}:{d.hash}:{d.error}" for d in items))
