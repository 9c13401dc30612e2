"""ClusterRegistry: cluster registrations from hub Secrets, and their recorded health.

Secrets labelled ``hmls.tensorstack.dev/cluster: <name>`` carry a kubeconfig under data key
``kubeconfig``.  Each is vetted (``hmls.domain.kubeconfig``) before anything from it is used
and becomes a ``Registration`` value, keyed by a hash of the kubeconfig so that a rotated
Secret is a new registration and an unchanged one is not.  The registry only reports
registrations (``on_registered`` / ``on_removed``, in Secret event order); the engine's
``Spoke`` objects own everything that talks to a cluster.

The probe verdict of each cluster is kept on the hub in the ConfigMap
``hmls-cluster-health`` (one JSON value per cluster) for ``hmls cluster list``.  It is
written only when a verdict changes, never per probe.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hmls.domain.access import AccessPolicy
from hmls.domain.kubeconfig import KubeconfigPolicy, KubeconfigRefused, vet
from hmls.domain.models import CLUSTER_LABEL, FIELD_MANAGER
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import CONFIGMAPS

log = logging.getLogger("hmls.registry")

HEALTH_CONFIGMAP = "hmls-cluster-health"


@dataclass(frozen=True)
class Registration:
    name: str
    secret: str
    fingerprint: str
    """Hash of the Secret's kubeconfig: a new value means new credentials."""
    kubeconfig: Obj | None
    """The vetted kubeconfig; None when the Secret cannot be used (see ``error``)."""
    error: str | None
    access: AccessPolicy
    labels: dict[str, str] = field(default_factory=dict)
    """The Secret's labels: the cluster's labels, which selectors and overrides match."""


@dataclass(frozen=True)
class Profile:
    """What a ClusterProfile (``multicluster.x-k8s.io``) says about a cluster: its labels and
    its cluster manager's health verdict.  Never credentials."""

    name: str
    namespace: str
    labels: dict[str, str]
    healthy: bool | None
    """The ControlPlaneHealthy condition (None: not reported)."""
    message: str
    version: str


def profile(obj: Obj) -> Profile:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    cond = next((c for c in status.get("conditions") or []
                 if isinstance(c, dict) and c.get("type") == "ControlPlaneHealthy"), None)
    healthy = None if cond is None else cond.get("status") == "True"
    return Profile(str(meta.get("name", "")), str(meta.get("namespace", "")),
                   {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}, healthy,
                   str((cond or {}).get("message") or ""),
                   str((status.get("version") or {}).get("kubernetes") or ""))


def fleet_labels(profiles: Iterable[Profile], registered: Mapping[str, Mapping[str, str]]
                 ) -> dict[str, dict[str, str]]:
    """Every known cluster's labels, as selectors and overrides see them: its ClusterProfile's
    (of the first namespace, by name, that has one), overlaid by its registration Secret's
    (the Secret, which hmls's operators write, wins).  The controller and ``hmls diff`` both
    place workloads by this."""
    first: dict[str, Profile] = {}
    for p in sorted(profiles, key=lambda p: (p.name, p.namespace)):
        first.setdefault(p.name, p)
    out = {name: dict(p.labels) for name, p in first.items()}
    for name, labels in registered.items():
        out[name] = {**out.get(name, {}), **labels}
    return out


def registration(secret: Obj, policy: KubeconfigPolicy) -> Registration | None:
    """The registration a cluster Secret declares, or None if it is not labelled."""
    meta = secret.get("metadata") or {}
    name = (meta.get("labels") or {}).get(CLUSTER_LABEL, "")
    if not name:
        return None
    raw_b64 = (secret.get("data") or {}).get("kubeconfig", "")
    fingerprint = hashlib.sha256(str(raw_b64).encode()).hexdigest()
    access = AccessPolicy.from_annotations(meta.get("annotations"))
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    try:
        if not raw_b64:
            raise KubeconfigRefused("Secret has no data key 'kubeconfig'")
        try:
            raw = base64.b64decode(raw_b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise KubeconfigRefused("data.kubeconfig is not valid base64") from None
        return Registration(name, meta.get("name", ""), fingerprint, vet(raw, policy), None,
                            access, labels)
    except KubeconfigRefused as exc:
        return Registration(name, meta.get("name", ""), fingerprint, None, str(exc), access,
                            labels)


class ClusterRegistry:
    def __init__(self, *, namespace: str, hub: ClusterClient | None,
                 on_registered: Callable[[Registration], Awaitable[None]],
                 on_removed: Callable[[str], Awaitable[None]],
                 policy: KubeconfigPolicy | None = None,
                 records: Callable[[], bool] = lambda: True) -> None:
        """``records``: whether this replica keeps the probe verdicts on the hub now (with
        shards, the holder of shard 0 does; every replica probes for itself)."""
        self.namespace = namespace
        self._hub = hub
        self._records = records
        self._on_registered = on_registered
        self._on_removed = on_removed
        self._policy = policy or KubeconfigPolicy()
        self._current: dict[str, Registration] = {}
        self._secret_to_cluster: dict[str, str] = {}
        self._events: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        self._recorded: dict[str, dict[str, Any]] = {}

    def not_registered(self, name: str) -> str:
        return (f"cluster {name} is not registered (no Secret labelled "
                f"{CLUSTER_LABEL}={name} in namespace {self.namespace} on the hub)")

    # ----- Secret events (called from the hub Secret informer) ----------------------
    def on_secret_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        self._events.put_nowait((kind, new or old or {}))

    async def _handle(self, kind: str, secret: Obj) -> None:
        sname = (secret.get("metadata") or {}).get("name", "")
        previous = self._secret_to_cluster.get(sname)
        reg = None if kind == "DELETED" else registration(secret, self._policy)
        if previous and (reg is None or reg.name != previous):
            await self._drop(previous, sname)
        if reg is None:
            return
        other = self._current.get(reg.name)
        if other and other.secret != sname:
            log.warning("Secrets %s and %s both register cluster %s; keeping %s",
                        other.secret, sname, reg.name, other.secret)
            return
        self._secret_to_cluster[sname] = reg.name
        if other == reg:
            return
        self._current[reg.name] = reg
        log.info("cluster %s %s from Secret %s/%s%s", reg.name,
                 "updated" if other else "registered", self.namespace, sname,
                 f": {reg.error}" if reg.error else "")
        await self._on_registered(reg)

    async def _drop(self, name: str, sname: str) -> None:
        self._secret_to_cluster.pop(sname, None)
        reg = self._current.get(name)
        if reg is None or reg.secret != sname:
            return
        del self._current[name]
        log.info("cluster %s unregistered (Secret %s/%s deleted)", name, self.namespace, sname)
        await self._on_removed(name)

    async def run(self) -> None:
        """Apply Secret events in order."""
        while True:
            kind, secret = await self._events.get()
            try:
                await self._handle(kind, secret)
            except Exception:  # one bad Secret must not stop the registry
                log.exception("handling a cluster Secret failed")
            finally:
                self._events.task_done()

    async def drained(self) -> None:
        """Wait until every Secret event received so far has been handled."""
        await self._events.join()

    # ----- recorded health -----------------------------------------------------------
    async def load_recorded(self) -> None:
        """Read the verdicts a previous controller left, so that unchanged ones are not
        written again."""
        if self._hub is None:
            return
        try:
            self._recorded = recorded_health(
                await self._hub.get(CONFIGMAPS, self.namespace, HEALTH_CONFIGMAP))
        except errors.KubeError as exc:
            log.warning("could not read the recorded cluster health: %s", exc.message)

    def recorded(self, name: str) -> dict[str, Any] | None:
        return self._recorded.get(name)

    async def record(self, name: str, verdict: dict[str, Any] | None) -> None:
        """Keep a cluster's probe verdict on the hub (None removes it); best effort, and
        only when it changed."""
        if self._hub is None or not self._records() or self._recorded.get(name) == verdict:
            return
        patch = {"data": {name: json.dumps(verdict, sort_keys=True) if verdict else None}}
        try:
            try:
                await self._hub.patch(CONFIGMAPS, self.namespace, HEALTH_CONFIGMAP, patch,
                                      field_manager=FIELD_MANAGER)
            except errors.NotFound:
                try:
                    await self._hub.create(CONFIGMAPS, self.namespace, {
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": HEALTH_CONFIGMAP, "namespace": self.namespace},
                        "data": {k: v for k, v in patch["data"].items() if v is not None}},
                        field_manager=FIELD_MANAGER)
                except errors.Conflict:  # another cluster's verdict created it meanwhile
                    await self._hub.patch(CONFIGMAPS, self.namespace, HEALTH_CONFIGMAP, patch,
                                          field_manager=FIELD_MANAGER)
        except errors.KubeError as exc:
            log.warning("could not record the health of cluster %s: %s", name, exc.message)
            return
        if verdict is None:
            self._recorded.pop(name, None)
        else:
            self._recorded[name] = verdict


def recorded_health(configmap: Obj | None) -> dict[str, dict[str, Any]]:
    """The verdicts in a ``hmls-cluster-health`` ConfigMap, by cluster (for the CLI)."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in ((configmap or {}).get("data") or {}).items():
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            out[name] = value
    return out
