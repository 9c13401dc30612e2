"""``hmls rollout status|pause|resume|undo``: a Progressive HyperMLService's rollout, read
from its status and steered through its spec (the controller does the rest)."""

from __future__ import annotations

import asyncio

from hmls.commands.common import CLI_MANAGER, OperationError, hub_client, table
from hmls.domain.analysis import Tally
from hmls.domain.models import (
    OWNER_UID,
    Owner,
    timestamp,
)
from hmls.domain.rollout import HALTED
from hmls.domain.rollout import summary as rollout_summary
from hmls.domain.status import Status
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import (
    CONTROLLER_REVISIONS,
    HMLS,
)


def _split(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.rpartition("/")
    return namespace or "default", name


async def _stored(client: ClusterClient, ref: str) -> Obj:
    namespace, name = _split(ref)
    obj = await client.get(HMLS, namespace, name)
    if obj is None:
        raise OperationError(f"HyperMLService {namespace}/{name} not found")
    return obj


def _rollout_text(obj: Obj) -> tuple[str, bool]:
    """The rollout as a table and its RolledOut condition; True when it is over (rolled out
    or halted)."""
    view = Status.of(obj)
    if view.rollout is None:
        strategy = ((obj.get("spec") or {}).get("rollout") or {}).get("strategy", "All")
        return (f"no progressive rollout (strategy {strategy})", True)
    state, order = view.rollout.state, list(view.rollout.order)
    steps = [state.steps[c] for c in order]
    analysed = any(s.analysis for s in steps)
    rows = [["CLUSTER", "REVISION", "PHASE", "SINCE", *(["ANALYSIS"] if analysed else [])]]
    rows += [[s.cluster, ("-" if s.revision is None else str(s.revision)) + (
        f" -> {s.target}" if s.target not in (None, s.revision) else ""), s.phase,
        timestamp(s.since) if s.since else "-",
        *([_analysis_text(s.analysis)] if analysed else [])] for s in steps]
    cond = view.condition("RolledOut")
    lines = [f"revision {state.current} (last good: "
             f"{'none' if state.last_good is None else state.last_good}): "
             f"{rollout_summary(state, order)}", table(rows),
             f"RolledOut={cond.status} ({cond.reason}): {cond.message}" if cond
             else "RolledOut=None (None): None"]
    observed = view.observed_generation == obj["metadata"].get("generation")
    over = observed and cond is not None and (cond.status == "True" or cond.reason == HALTED)
    return "\n".join(lines), over


def _analysis_text(tallies: tuple[Tally, ...]) -> str:
    """Each metric's last measurement: "error-ratio=0.002 Successful (3 ok, 0 failed)"."""
    if not tallies:
        return "-"
    return ", ".join(
        f"{t.metric}={'-' if t.last is None or t.last.value is None else f'{t.last.value:.4g}'}"
        f" {t.last.result if t.last else 'unmeasured'} ({t.successes} ok, {t.failures} failed"
        + (f", {t.inconclusive} inconclusive" if t.inconclusive else "") + ")"
        for t in tallies)


async def rollout_status(ref: str, *, hub: str | None, context: str | None = None, watch: bool,
                         interval: float = 1.0) -> tuple[int, str]:
    """The rollout's state; with ``watch``, printed on every change until it is rolled out
    (exit 0) or halted (exit 1), as ``kubectl rollout status`` waits."""
    async with hub_client(hub, context) as client:
        shown = ""
        while True:
            obj = await _stored(client, ref)
            text, over = _rollout_text(obj)
            if not watch:
                return 0, text
            if text != shown:
                print(text, flush=True)
                shown = text
            if over:
                view = Status.of(obj)
                cond = view.condition("RolledOut")
                return (0 if view.rollout is None or (cond and cond.status == "True")
                        else 1), ""
            await asyncio.sleep(interval)


async def rollout_pause(ref: str, *, hub: str | None, context: str | None = None, paused: bool) -> str:
    async with hub_client(hub, context) as client:
        obj = await _stored(client, ref)
        meta = obj["metadata"]
        await client.patch(HMLS, meta["namespace"], meta["name"],
                           {"spec": {"rollout": {"paused": paused}}}, field_manager=CLI_MANAGER)
    return f"rollout of {meta['namespace']}/{meta['name']} {'paused' if paused else 'resumed'}"


async def rollout_undo(ref: str, *, hub: str | None, context: str | None = None,
                       to_revision: int | None) -> str:
    """Put the workloads of an earlier revision (by default the one before the current) back
    into the spec: the rollout then takes them to the clusters as any change."""
    async with hub_client(hub, context) as client:
        obj = await _stored(client, ref)
        meta = obj["metadata"]
        owner = Owner.of(obj)
        listed, _ = await client.list(CONTROLLER_REVISIONS, namespace=owner.namespace,
                                      label_selector=f"{OWNER_UID}={owner.uid}")
        revisions = {o["revision"]: o for o in listed if isinstance(o.get("revision"), int)}
        stored = Status.of(obj).rollout
        current = stored.state.current if stored else None
        if not revisions:
            raise OperationError(f"{owner.key} has no recorded revisions (is its rollout "
                                 "strategy Progressive?)")
        if to_revision is None:
            older = [n for n in revisions if current is None or n < current]
            if not older:
                raise OperationError(f"{owner.key} has no revision before {current}")
            to_revision = max(older)
        found = revisions.get(to_revision)
        if found is None:
            raise OperationError(f"{owner.key} has no revision {to_revision} (kept: "
                                 f"{', '.join(map(str, sorted(revisions)))})")
        await client.patch(HMLS, meta["namespace"], meta["name"],
                           {"spec": {"workloads": found["data"]["workloads"]}},
                           field_manager=CLI_MANAGER)
    return f"{owner.key} rolled back to the workloads of revision {to_revision}"
