"""The fault injector: picks a fault at random (from a seeded generator, so a run can be
replayed), injects it, holds it for a random time and heals it; at most ``max_active``
overlap.  Each fault is recorded with when it started and healed, and — filled in by the
invariant checker — when the system had converged again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from hmls_devenv.environment import Environment
from hmls_devenv.proxy import FaultProxy

from hmls.kube.watching import wait_event

T = TypeVar("T")

GLOBAL = frozenset({"hub_kill", "etcd_kill", "controller_kill"})
"""Faults that stop hmls everywhere (no hub, no storage, or the leader gone)."""
CUTS_CLUSTER = frozenset({"spoke_kill", "partition", "blackhole", "secret_corrupt"})
"""Faults after which hmls cannot reach (or use) one spoke."""
CONTROL_PLANE = frozenset({"hub_kill", "etcd_kill"})
PROBE_TIMEOUT_S = 1.5
"""The replicas' probe timeout (soak.py passes it).  With --probe-interval 2 and 3 failures,
a black-holed spoke is known within 2 + 3 x 1.5 (+ 2 x 0.2 between confirmations) = 6.9 s:
inside the traffic rule's 10 s."""
NEW_CONNECTION_DELAYS = 5.5
"""How many of a ``slow`` link's per-chunk delays a probe waits when it opens a connection:
the TLS handshake's flights, the request and the answer (measured through FaultProxy
against a local API server: 5.1-5.4 delays; 2.0-2.4 on a kept-alive connection).  A probe
cannot count on a kept-alive one: a replica drops a cluster's connections when it declares
it unreachable, and a busy pool has none idle."""
SLOW_DELAY_S = (0.1, round(0.75 * PROBE_TIMEOUT_S / NEW_CONNECTION_DELAYS, 2))
"""Per chunk and direction (0.1-0.2 s).  The slow fault is a slow link, not a dead one: a
probe on a new connection takes at most three quarters of PROBE_TIMEOUT_S (the rest is room
for a busy machine), so the checker rightly counts the spoke healthy.  (The bound was 0.6: at 0.49 a new
connection's probe took 2.5 s, the leader declared the slow spoke unreachable, and with the
other spoke of three HyperMLServices partitioned it had no cluster left to move their traffic
to: 11.7 s of weight on the partitioned one, quick soak seed 4064144916.)"""

# kind -> (weight, shortest, longest hold in seconds; 0 = instant)
KINDS: dict[str, tuple[float, float, float]] = {
    "spoke_kill": (2.0, 3, 12),
    "hub_kill": (1.0, 3, 10),
    "etcd_kill": (0.7, 2, 6),
    "controller_kill": (2.0, 2, 8),
    "partition": (1.5, 5, 20),
    "blackhole": (1.5, 5, 20),
    "slow": (1.0, 10, 30),
    "secret_rotate": (1.0, 0, 0),
    "secret_corrupt": (1.0, 5, 15),
    "drift_edit": (2.0, 0, 0),
    "drift_delete": (2.0, 0, 0),
    "not_ready": (2.0, 5, 20),
}


@dataclass
class Fault:
    kind: str
    target: str
    started: float
    hold: float
    healed: float | None = None
    converged: float | None = None
    detail: str = ""
    blockers: list[str] = field(default_factory=list)
    """What was still wrong at the last cadence before it converged."""

    def affects(self, cluster: str) -> bool:
        return self.kind in GLOBAL or self.target == cluster

    def to_json(self, t0: float) -> dict[str, object]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 2)
        return {"kind": self.kind, "target": self.target, "started": rel(self.started),
                "healed": rel(self.healed), "converged": rel(self.converged),
                "detail": self.detail, "blockers": self.blockers}


class Target(Protocol):
    """What the injector acts on (the soak's world)."""

    env: Environment
    proxies: dict[str, FaultProxy]

    def spokes(self) -> list[str]: ...
    async def kill_controller(self, leader: bool) -> str:
        """SIGKILL a replica (the Lease holder if leader) and keep it down; its name."""
    def hold_controller(self, name: str, held: bool) -> None: ...
    async def register(self, cluster: str, *, variant: int) -> None: ...
    async def corrupt_registration(self, cluster: str) -> None: ...
    async def drift(self, *, delete: bool) -> tuple[str, str] | None: ...
    async def set_ready(self, ready: bool, where: tuple[str, str] | None = None
                        ) -> tuple[str, str] | None: ...


async def retrying(what: Callable[[], Awaitable[T]], *, seconds: float = 120.0) -> T:
    """Heal actions (and the driver's rollout episodes, which must not stop half-way) write to
    servers that may themselves be down (another fault): retry.  ``what`` must be safe to
    repeat: a write that failed may still have landed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await what()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


@dataclass
class Injector:
    world: Target
    rng: random.Random
    mean_gap: float
    max_active: int = 2
    faults: list[Fault] = field(default_factory=list)
    log: Callable[[str], None] = print
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _heal_now: asyncio.Event = field(default_factory=asyncio.Event)

    def active(self) -> list[Fault]:
        return [f for f in self.faults if f.healed is None]

    def cut(self, cluster: str) -> bool:
        """hmls cannot reach or use this cluster now (by the injector's doing)."""
        return any(f.kind in CUTS_CLUSTER and f.target == cluster for f in self.active())

    def quiet_since(self, cluster: str | None = None) -> float | None:
        """When the last fault affecting this cluster (or, for None, any fault) healed; None
        while one is still active."""
        relevant = [f for f in self.faults if cluster is None or f.affects(cluster)]
        if any(f.healed is None for f in relevant):
            return None
        return max((f.healed for f in relevant if f.healed is not None), default=0.0)

    def control_plane_since(self) -> float | None:
        """When the hub and etcd were last back (None while either is down)."""
        relevant = [f for f in self.faults if f.kind in CONTROL_PLANE]
        if any(f.healed is None for f in relevant):
            return None
        return max((f.healed for f in relevant if f.healed is not None), default=0.0)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / self.mean_gap))
            if len(self.active()) >= self.max_active:
                continue
            kind, target = self._pick()
            if kind:
                task = asyncio.create_task(self._one(kind, target))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def heal_all(self) -> None:
        """Stop injecting; heal what is active now."""
        self._heal_now.set()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _pick(self) -> tuple[str, str]:
        kinds = list(KINDS)
        kind = self.rng.choices(kinds, weights=[KINDS[k][0] for k in kinds])[0]
        target = {"hub_kill": "hub", "etcd_kill": "etcd", "controller_kill": "controller"}.get(
            kind) or self.rng.choice(self.world.spokes())
        busy = {(f.kind, f.target) for f in self.active()}
        if (kind, target) in busy or (kind in CUTS_CLUSTER and self.cut(target)):
            return "", ""
        return kind, target

    async def _hold(self, seconds: float) -> None:
        await wait_event(self._heal_now, seconds)

    async def _one(self, kind: str, target: str) -> None:
        lo, hi = KINDS[kind][1:]
        fault = Fault(kind, target, time.monotonic(), round(self.rng.uniform(lo, hi), 1))
        self.faults.append(fault)
        try:
            heal = await self._inject(fault)
            self.log(f"fault {kind} {fault.target} {fault.detail} for {fault.hold:.1f}s")
            if heal is not None:
                await self._hold(fault.hold)
                await retrying(heal)
        except Exception as exc:  # a fault that could not be injected is recorded, not fatal
            fault.detail += f" (failed: {type(exc).__name__}: {exc})"
            self.log(f"fault {kind} {target}: {fault.detail}")
        finally:
            fault.healed = time.monotonic()

    async def _inject(self, fault: Fault) -> Callable[[], Awaitable[None]] | None:
        """Inject; the heal action (None: instant)."""
        w, kind, target = self.world, fault.kind, fault.target
        env = w.env
        if kind in ("spoke_kill", "hub_kill"):
            name = "hub" if kind == "hub_kill" else target
            await asyncio.to_thread(env.kill_cluster, name)
            return lambda: asyncio.to_thread(env.start_cluster, name)
        if kind == "etcd_kill":
            await asyncio.to_thread(env.kill_etcd)
            return lambda: asyncio.to_thread(env.start_etcd)
        if kind == "controller_kill":
            name = await w.kill_controller(leader=self.rng.random() < 0.75)
            fault.detail = f"replica {name}"

            async def restart() -> None:
                w.hold_controller(name, False)
            return restart
        if kind in ("partition", "blackhole", "slow"):
            proxy = w.proxies[target]
            delay = round(self.rng.uniform(*SLOW_DELAY_S), 2) if kind == "slow" else 0.0
            proxy.set({"partition": "drop"}.get(kind, kind), delay)
            fault.detail = f"delay {delay}s" if delay else ""

            async def unblock() -> None:
                proxy.set("pass")
            return unblock
        if kind == "secret_rotate":
            await w.register(target, variant=len(self.faults))
            return None
        if kind == "secret_corrupt":
            await w.corrupt_registration(target)
            return lambda: w.register(target, variant=len(self.faults))
        if kind in ("drift_edit", "drift_delete"):
            what = await w.drift(delete=kind == "drift_delete")
            fault.target, fault.detail = what if what else (target, "no object to drift")
            return None
        if kind == "not_ready":
            where = await w.set_ready(False)
            if where is None:
                fault.detail = "no MLService"
                return None
            fault.target, fault.detail = where

            async def ready() -> None:
                await w.set_ready(True, where)
            return ready
        raise ValueError(kind)
