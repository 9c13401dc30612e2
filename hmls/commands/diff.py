"""``hmls diff``: what applying a HyperMLService would change, cluster by cluster.

The CR (from a file, or as stored on the hub) is rendered as the controller renders it, with
the registered clusters' labels for selectors and overrides.  Every target cluster is then
asked what it would store: a server-side apply with ``dryRun=All`` under hmls's field
manager, compared with the live object.  Objects the CR created before (its status
inventory) that are no longer desired are shown as pruned, and with ``spec.traffic`` the
HeadIngress weights that would follow from the live health are shown next to today's.
Nothing is written anywhere.  Exit codes follow ``kubectl diff``: 0 no change, 1 changes,
2 an error (a cluster that cannot be asked, a manifest that cannot be rendered or applied).
"""

from __future__ import annotations

import datetime as dt
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hmls.commands.common import OperationError, hub_client
from hmls.domain import plan as plan_mod
from hmls.domain import traffic as traffic_mod
from hmls.domain.health import health
from hmls.domain.kubeconfig import KubeconfigPolicy
from hmls.domain.models import (
    CLUSTER_LABEL,
    FIELD_MANAGER,
    HASH_ANNOTATION,
    KIND,
    OWNER_UID,
    InvalidSpec,
    Owner,
    Spec,
    parse_spec,
)
from hmls.domain.render import Desired, ResourceRef, scoped
from hmls.domain.status import ItemResult, Status
from hmls.engine import rollouts
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.registry import (
    HEALTH_CONFIGMAP,
    Registration,
    fleet_labels,
    profile,
    recorded_health,
    registration,
)
from hmls.kube.resources import CLUSTER_PROFILES, CONFIGMAPS, HMLS, SECRETS

NO_CHANGE, CHANGES, ERROR = 0, 1, 2
_NOISE = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    changed: int = 0
    errors: int = 0

    def error(self, text: str) -> None:
        self.errors += 1
        self.lines.append(f"  ! {text}")

    @property
    def code(self) -> int:
        return ERROR if self.errors else CHANGES if self.changed else NO_CHANGE


def _shown(obj: Obj | None) -> list[str]:
    """An object as diffed: without server bookkeeping, status and hmls's hash."""
    if obj is None:
        return []
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOISE}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != HASH_ANNOTATION}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    return yaml.safe_dump({**body, "metadata": meta}, sort_keys=True).splitlines()


def _diff(cluster: str, ref: ResourceRef, before: Obj | None, after: Obj | None) -> list[str]:
    name = f"{cluster}/{ref}"
    return ["    " + line for line in difflib.unified_diff(
        _shown(before), _shown(after), f"{name} (live)", f"{name} (after apply)", lineterm="")]


def _load(path: str) -> Obj:
    """The one HyperMLService in a file (``-``: standard input, as kubectl reads it)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise OperationError(f"cannot read {path}: {exc}") from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(found) != 1:
        raise OperationError(f"{path} must hold exactly one {KIND} (found {len(found)})")
    return found[0]


class _Preview:
    def __init__(self, hub: ClusterClient, namespace: str, policy: KubeconfigPolicy) -> None:
        self.hub, self.namespace, self.policy = hub, namespace, policy
        self.fleet: dict[str, Registration] = {}
        self.reachable: dict[str, bool | None] = {}
        self.labels: dict[str, dict[str, str]] = {}
        """Each cluster's labels as the controller places by (ClusterProfile, Secret)."""
        self.live: dict[tuple[str, ResourceRef], Obj | None] = {}
        self.writers: dict[str, str | None] = {}
        """Per cluster, who the controller would write as (a tenant-mode cluster: the hub
        namespace's tenant, so the dry run meets the same RBAC and admission)."""

    async def load_fleet(self) -> None:
        secrets, _ = await self.hub.list(SECRETS, namespace=self.namespace,
                                         label_selector=CLUSTER_LABEL)
        for secret in secrets:
            reg = registration(secret, self.policy)
            if reg is not None:
                self.fleet[reg.name] = reg
        verdicts = recorded_health(await self.hub.get(CONFIGMAPS, self.namespace,
                                                      HEALTH_CONFIGMAP))
        self.reachable = {n: v.get("reachable") for n, v in verdicts.items()}
        try:
            listed, _ = await self.hub.list(CLUSTER_PROFILES)
        except (errors.NotFound, errors.UnknownKind):  # the hub serves no ClusterProfile API
            listed = []
        self.labels = fleet_labels(map(profile, listed),
                                   {n: r.labels for n, r in self.fleet.items()})

    async def cluster(self, name: str, owner: Owner, spec: Spec, items: list[Desired],
                      inventory: set[ResourceRef], report: Report) -> None:
        reg = self.fleet.get(name)
        if reg is None or reg.kubeconfig is None:
            why = reg.error if reg else "not registered"
            report.error(f"cluster {name} cannot be used: {why}")
            return
        refused = reg.access.refuse_owner(name, owner.namespace)
        if refused:
            report.error(refused)
            return
        self.writers[name] = reg.access.writer(owner.namespace)
        try:
            client = await ClusterClient.from_kubeconfig(name, reg.kubeconfig, timeout=10.0)
        except errors.KubeError as exc:
            report.error(f"cluster {name} cannot be used: {exc.message}")
            return
        try:
            for item in items:
                await self._item(client, name, owner, spec, item, report)
            for ref in sorted(inventory - {i.ref for i in items}):
                await self._pruned(client, name, owner, ref, report)
        finally:
            await client.close()

    async def _item(self, client: ClusterClient, cluster: str, owner: Owner, spec: Spec,
                    item: Desired, report: Report) -> None:
        if item.error:
            report.error(f"{item.ref}: {item.error}")
            return
        try:
            res = await client.resource(item.ref.api_version, item.ref.kind)
            refused = self.fleet[cluster].access.refuse_object(
                cluster, kind=item.ref.kind, namespaced=res.namespaced,
                namespace=item.ref.namespace, owner_namespace=owner.namespace,
                api_version=item.ref.api_version, body=item.body)
            if refused:
                report.error(f"{item.ref}: {refused}")
                return
            ns = item.ref.namespace if res.namespaced else None
            body = scoped(item.body, res.namespaced)
            live = await client.get(res, ns, item.ref.name)
            self.live[(cluster, item.ref)] = live
            owned = live is not None and _owner_uid(live) == owner.uid
            try:
                after = await client.apply(body, field_manager=FIELD_MANAGER, resource=res,
                                           force=spec.take_over or owned, dry_run=True,
                                           impersonate=self.writers[cluster])
                note = ""
            except errors.NotFound:
                if live is not None or not ns:
                    raise
                after, note = body, f" (namespace {ns} would be created)"
        except errors.KubeError as exc:
            report.error(f"{item.ref}: {exc.message}")
            return
        if live is None:
            report.changed += 1
            report.lines.append(f"  + {item.ref} created{note}")
            report.lines += _diff(cluster, item.ref, None, after)
        elif _shown(live) != _shown(after):
            report.changed += 1
            report.lines.append(f"  ~ {item.ref} changed")
            report.lines += _diff(cluster, item.ref, live, after)
        else:
            report.lines.append(f"  = {item.ref} unchanged")

    async def _pruned(self, client: ClusterClient, cluster: str, owner: Owner, ref: ResourceRef,
                      report: Report) -> None:
        try:
            res = await client.resource(ref.api_version, ref.kind)
            live = await client.get(res, ref.namespace if res.namespaced else None, ref.name)
        except errors.UnknownKind:
            return
        except errors.KubeError as exc:
            report.error(f"{ref}: {exc.message}")
            return
        if live is not None and _owner_uid(live) == owner.uid:
            report.changed += 1
            report.lines.append(f"  - {ref} pruned")
            report.lines += _diff(cluster, ref, live, None)

    def weights(self, owner: Owner, spec: Spec, desired: list[Desired],
                previous: Status, report: Report) -> None:
        """Today's HeadIngress weights and those the new spec would give with live health."""
        assert spec.traffic is not None
        items = []
        for d in desired:
            live = self.live.get((d.cluster, d.ref))
            if d.error or live is None:
                items.append(ItemResult(d.cluster, d.ref, False, d.error or "not applied yet"))
            else:
                items.append(ItemResult(d.cluster, d.ref, True, "", live.get("status"),
                                        health(live)))
        try:
            plan = traffic_mod.plan(owner=owner, traffic=spec.traffic, items=items,
                                    reachable=self.reachable, previous=previous.traffic,
                                    now=dt.datetime.now(dt.UTC),
                                    labels=self.labels)
        except ValueError as exc:
            report.error(f"HeadIngress: {exc}")
            return
        before = {r.cluster: r.effective_weight
                  for r in (previous.traffic.routes if previous.traffic else ())}
        after = {r.cluster: r for r in plan.status.routes}
        shown = []
        for cluster in sorted(set(before) | set(after)):
            route = after.get(cluster)
            new = route.effective_weight if route else 0
            reason = route.reason if route else None
            old = before.get(cluster)
            shown.append(f"{cluster} {'-' if old is None else f'{old}%'} -> {new}%"
                         + (f" ({reason})" if reason else ""))
            if old != new:
                report.changed += 1
        report.lines.append(f"HeadIngress on {spec.traffic.ingress_cluster}: "
                            + ", ".join(shown or ["no routes"]))


def _owner_uid(obj: Obj) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(OWNER_UID)


async def diff(*, hub: str | None, context: str | None = None, namespace: str, policy: KubeconfigPolicy,
               file: str | None = None, ref: str | None = None) -> tuple[int, str]:
    """(exit code, text) of what applying the CR would change."""
    async with hub_client(hub, context) as client:
        if file:
            obj = _load(file)
            meta = obj.get("metadata") or {}
            cr_ns, cr_name = str(meta.get("namespace") or "default"), str(meta.get("name", ""))
        else:
            cr_ns, _, cr_name = (ref or "").rpartition("/")
            cr_ns = cr_ns or "default"
        stored = await client.get(HMLS, cr_ns, cr_name) if cr_name else None
        if not file:
            if stored is None:
                raise OperationError(f"{KIND} {cr_ns}/{cr_name} not found")
            obj = stored
        if not cr_name:
            raise OperationError(f"{file}: the {KIND} has no metadata.name")
        try:
            spec = parse_spec(obj.get("spec"))
        except InvalidSpec as exc:
            raise OperationError(str(exc)) from None
        owner = Owner(cr_ns, cr_name, str((stored or {}).get("metadata", {}).get("uid", "")))
        previous = Status.of(stored)
        preview = _Preview(client, namespace, policy)
        await preview.load_fleet()
        history = None
        workloads = list((obj.get("spec") or {}).get("workloads") or [])
        if spec.rollout.strategy == "Progressive":  # what the controller would record
            known = await rollouts.Revisions(client).of(owner) if owner.uid else {}
            history = rollouts.planned(known, workloads)
        # the controller's own plan phase: placement, the rollout's revision per cluster
        planned = plan_mod.plan(owner=owner, spec=spec, raw_spec=obj.get("spec") or {},
                                fleet=preview.labels, previous=previous, history=history,
                                now=dt.datetime.now(dt.UTC))
        desired = planned.desired
        by_cluster: dict[str, list[Desired]] = {}
        for d in desired:
            by_cluster.setdefault(d.cluster, []).append(d)
        inventory = previous.inventory()
        if spec.traffic is not None:  # the HeadIngress stays; its weights are shown below
            inventory.get(spec.traffic.ingress_cluster, set()).difference_update(
                previous.traffic.objects if previous.traffic else ())
        report = Report()
        rendered_at = planned.rendered_at or {}
        for name in sorted(set(by_cluster) | {c for c, refs in inventory.items() if refs}):
            line = f"cluster {name}:"
            if history is not None and name in rendered_at:
                at = rendered_at[name]
                line += f" revision {history.current}" + ("" if at == history.current else
                    f" waits for its rollout step (runs revision {'-' if at is None else at})")
            report.lines.append(line)
            await preview.cluster(name, owner, spec, by_cluster.get(name, []),
                                  inventory.get(name, set()), report)
        if spec.traffic is not None:
            preview.weights(owner, spec, desired, previous, report)
    summary = ("no changes" if report.code == NO_CHANGE else
               f"{report.changed} changes" + (f", {report.errors} errors" if report.errors else ""))
    return report.code, "\n".join([*report.lines, summary])

