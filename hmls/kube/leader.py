"""Leader election on a coordination.k8s.io/v1 Lease (one active replica).

client-go's algorithm, small: a candidate takes the Lease when it does not exist, is
released (empty holder), or has not changed for ``lease_seconds`` as observed on the local
monotonic clock (so clock skew between replicas does not matter).  The leader renews every
``retry_seconds`` and gives up — the process then exits and is restarted — when it could not
renew for ``renew_deadline`` seconds.  On a clean shutdown the Lease is released so a standby
takes over at its next retry instead of waiting for expiry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.resources import LEASES

log = logging.getLogger("hmls.leader")


class LostLeadership(Exception):
    """The Lease could not be renewed in time; this replica must stop working."""


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: ClusterClient, *, namespace: str, identity: str,
                 name: str = "hmls-controller", lease_seconds: float = 15.0,
                 renew_deadline: float = 10.0, retry_seconds: float = 2.0) -> None:
        self.client, self.namespace, self.name = client, namespace, name
        self.identity = identity
        self.lease_seconds, self.renew_deadline, self.retry = lease_seconds, renew_deadline, retry_seconds
        self._observed_rv = ""
        self._observed_at = 0.0
        self.is_leader = False

    async def _try(self) -> bool:
        """One attempt to acquire or renew; True if this replica holds the Lease now."""
        lease = await self.client.get(LEASES, self.namespace, self.name)
        now = _micro_now()
        if lease is None:
            body: Obj = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": int(self.lease_seconds),
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }
            try:
                await self.client.create(LEASES, self.namespace, body)
            except errors.Conflict:
                return False
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        rv = lease["metadata"]["resourceVersion"]
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at = rv, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            return False
        new_spec = {**spec, "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(self.lease_seconds), "renewTime": now}
        if holder != self.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            updated = await self.client.request(
                "PUT", LEASES.path(self.namespace, self.name),
                body={**lease, "spec": new_spec})
        except errors.Conflict:
            return False
        self._observed_rv, self._observed_at = updated["metadata"]["resourceVersion"], time.monotonic()
        return True

    async def acquire(self) -> None:
        """Block until this replica is the leader."""
        log.info("waiting for leadership of Lease %s/%s as %s", self.namespace, self.name,
                 self.identity)
        while True:
            try:
                if await self._try():
                    self.is_leader = True
                    log.info("became leader (%s)", self.identity)
                    return
            except errors.KubeError as exc:
                log.info("leader election: %s", exc.message)
            await asyncio.sleep(self.retry)

    async def hold(self) -> None:
        """Renew until cancelled; raise LostLeadership when renewal fails for too long."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.retry)
            try:
                ok = await self._try()
            except errors.KubeError as exc:
                log.warning("renewing the Lease failed: %s", exc.message)
                ok = False
            if ok:
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > self.renew_deadline:
                self.is_leader = False
                raise LostLeadership(f"could not renew Lease {self.namespace}/{self.name} "
                                     f"for {self.renew_deadline:.0f}s")

    async def release(self) -> None:
        """Give the Lease up (clean shutdown) so a standby takes over quickly."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                await self.client.request("PUT", LEASES.path(self.namespace, self.name),
                                          body={**lease, "spec": spec})
                log.info("released Lease %s/%s", self.namespace, self.name)
        except errors.KubeError as exc:
            log.warning("could not release the Lease: %s", exc.message)
