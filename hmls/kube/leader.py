"""Leader election on coordination.k8s.io/v1 Leases: one active replica, or N shards.

One Lease is client-go's algorithm, small: a candidate takes it when it does not exist, is
released (empty holder), or has not changed for ``lease_seconds`` as observed on the local
monotonic clock (so clock skew between replicas does not matter).  The holder renews every
``retry_seconds`` and gives up — the process then exits and is restarted — when it could not
renew for ``renew_deadline`` seconds.  On a clean shutdown it is released so that another
replica takes it at its next retry instead of waiting for expiry.

``Election`` runs that for ``shards`` Leases.  With one shard it is plain leader election on
the Lease ``hmls-controller``; with N it uses ``hmls-controller-shard-0`` … ``-(N-1)``, and a
replica reconciles the HyperMLServices whose key hashes to a shard it holds.  A replica
holding no shard takes any it can.  One that holds a shard already takes a free one (never
created, or released by a replica that shut down) only after it stayed free for a lease
duration, so that replicas starting together, or the new pod of a rolling update, each get
one; an expired one (its replica died) it takes as soon as it expires.  Losing any held
shard stops the process, as losing leadership does: whatever it was doing for that shard's
keys stops with it.  Shards are not handed back: after a takeover the survivor keeps them
until it restarts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from hmls.domain.sharding import shard_of
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import LEASES

log = logging.getLogger("hmls.leader")

LEASE_NAME = "hmls-controller"


def lease_name(shard: int, shards: int) -> str:
    return LEASE_NAME if shards == 1 else f"{LEASE_NAME}-shard-{shard}"


class LostLeadership(Exception):
    """A held Lease could not be renewed in time; this replica must stop working."""


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Lease:
    """One Lease as this replica sees it: taking, renewing and releasing it."""

    def __init__(self, client: ClusterClient, *, namespace: str, name: str, identity: str,
                 lease_seconds: float) -> None:
        self.client, self.namespace, self.name = client, namespace, name
        self.identity, self.lease_seconds = identity, lease_seconds
        self._observed: str | None = None  # resourceVersion last seen ("" while absent)
        self._observed_at = 0.0
        self.held = False
        self.holder = ""  # as last read

    async def try_hold(self, patience: float = 0.0) -> bool:
        """One attempt to take or renew; True if this replica holds the Lease now.  A Lease
        held by another is taken once unchanged for its duration; a free or missing one once
        it stayed so for ``patience`` seconds."""
        lease = await self.client.get(LEASES, self.namespace, self.name)
        rv = lease["metadata"]["resourceVersion"] if lease else ""
        if rv != self._observed:
            self._observed, self._observed_at = rv, time.monotonic()
        waited = time.monotonic() - self._observed_at
        spec = (lease or {}).get("spec") or {}
        holder = self.holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder != self.identity and waited < (duration if holder else patience):
            return False
        now = _micro_now()
        try:
            if lease is None:
                updated = await self.client.create(LEASES, self.namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity,
                             "leaseDurationSeconds": int(self.lease_seconds),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}})
            else:
                new_spec = {**spec, "holderIdentity": self.identity,
                            "leaseDurationSeconds": int(self.lease_seconds), "renewTime": now}
                if holder != self.identity:
                    new_spec["acquireTime"] = now
                    new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
                updated = await self.client.request(
                    "PUT", LEASES.path(self.namespace, self.name),
                    body={**lease, "spec": new_spec})
        except errors.Conflict:
            return False
        self._observed, self._observed_at = updated["metadata"]["resourceVersion"], time.monotonic()
        self.holder = self.identity
        return True

    async def release(self) -> None:
        """Give the Lease up (clean shutdown) so another replica takes it quickly."""
        if not self.held:
            return
        self.held = False
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec: Obj = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                await self.client.request("PUT", LEASES.path(self.namespace, self.name),
                                          body={**lease, "spec": spec})
                log.info("released Lease %s/%s", self.namespace, self.name)
        except errors.KubeError as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name,
                        exc.message)


class Election:
    def __init__(self, client: ClusterClient, *, namespace: str, identity: str,
                 shards: int = 1, lease_seconds: float = 15.0, renew_deadline: float = 10.0,
                 retry_seconds: float = 2.0,
                 on_acquired: Callable[[int], None] = lambda shard: None) -> None:
        self.identity, self.shards = identity, shards
        self.lease_seconds, self.renew_deadline, self.retry = (lease_seconds, renew_deadline,
                                                               retry_seconds)
        self.leases = [Lease(client, namespace=namespace, name=lease_name(k, shards),
                             identity=identity, lease_seconds=lease_seconds)
                       for k in range(shards)]
        self._renewed = [0.0] * shards
        self._on_acquired = on_acquired

    @property
    def held(self) -> list[int]:
        return [k for k, lease in enumerate(self.leases) if lease.held]

    def holds(self, shard: int) -> bool:
        return self.leases[shard].held

    def owns(self, key: str) -> bool:
        """True if this replica reconciles the HyperMLService ``namespace/name``."""
        return self.leases[shard_of(key, self.shards)].held

    async def _round(self) -> None:
        """Renew every held Lease and try the others once; raises LostLeadership when a
        held one went unrenewed past the deadline."""
        holding = bool(self.held)
        for k, lease in enumerate(self.leases):
            try:
                ok = await lease.try_hold(
                    patience=self.lease_seconds if holding and not lease.held else 0.0)
            except errors.KubeError as exc:
                log.warning("Lease %s/%s: %s", lease.namespace, lease.name, exc.message)
                ok = False
            if ok:
                self._renewed[k] = time.monotonic()
                if not lease.held:
                    lease.held = holding = True
                    log.info("holding Lease %s/%s as %s", lease.namespace, lease.name,
                             self.identity)
                    self._on_acquired(k)
            elif lease.held and lease.holder not in ("", self.identity):
                lease.held = False
                raise LostLeadership(f"lost Lease {lease.namespace}/{lease.name}: held by "
                                     f"{lease.holder} now")
            elif lease.held and time.monotonic() - self._renewed[k] > self.renew_deadline:
                lease.held = False
                raise LostLeadership(f"lost Lease {lease.namespace}/{lease.name}: not renewed "
                                     f"for {self.renew_deadline:.0f}s")

    async def acquire(self) -> None:
        """Block until this replica holds at least one Lease."""
        log.info("waiting for one of %d Lease(s) %s as %s", self.shards,
                 self.leases[0].name if self.shards == 1 else f"{LEASE_NAME}-shard-*",
                 self.identity)
        while True:
            await self._round()
            if self.held:
                return
            await asyncio.sleep(self.retry)

    async def hold(self) -> None:
        """Renew what is held and take what is free, until cancelled or a Lease is lost."""
        while True:
            await asyncio.sleep(self.retry)
            await self._round()

    async def release(self) -> None:
        for lease in self.leases:
            await lease.release()
