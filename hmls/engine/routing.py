"""Event routing, declared in one place: every source of change, the pure function that maps
its event to HyperMLService keys, and when each key is reconciled.

The model is controller-runtime's ``Watches(source, EnqueueRequestsFromMapFunc(f))``: a
source only reports what changed (``Router.emit``); ``ROUTES`` says which map function turns
that into keys; the work queue does the rest (deduplication, backoff).  A reader who wants to
know "what makes this CR reconcile" reads the table below and nothing else.

    source                          event           map function      keys, and when
    ------------------------------  --------------  ----------------  -----------------------
    HUB_OBJECT   HyperMLService     HubEvent        hub_object        itself, at once (not the
                 on the hub                                           echo of our own write,
                                                                      not a deletion)
    REGISTRATION cluster Secret     ClusterEvent    concerning        every CR that names the
                 joined, rotated,                                     cluster, involved it in
                 relabelled, gone                                     its status, follows
    PROFILE      ClusterProfile     ClusterEvent    concerning        labels, or is being
    REACHABILITY probe verdict      ClusterEvent    concerning        deleted; at once
                 flipped
    RECOVERED    spoke cache listed ClusterEvent    concerning
                 after failing
    SPOKE_OBJECT object on a spoke  OwnerEvent      owner             its owner: at once for
                 with an owner                                        drift or a deletion,
                 label                                                after the batch window
                                                                      for a status change
    SHARD        shard Lease taken  Tick            every             every cached CR, at once
    RESYNC       resync period      Tick            spread            every cached CR, each at
                                                                      a random moment of the
                                                                      period
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from hmls.engine.hubcache import Cached


class Source(enum.Enum):
    HUB_OBJECT = "a HyperMLService on the hub"
    REGISTRATION = "a cluster's registration Secret"
    PROFILE = "a ClusterProfile"
    REACHABILITY = "a cluster's reachability verdict"
    RECOVERED = "a spoke cache that listed after failing"
    SPOKE_OBJECT = "an object on a spoke"
    SHARD = "a shard Lease taken over"
    RESYNC = "the resync period"


@dataclass(frozen=True)
class HubEvent:
    kind: str
    """ADDED, MODIFIED or DELETED."""
    old: Cached | None
    new: Cached | None


@dataclass(frozen=True)
class ClusterEvent:
    cluster: str


@dataclass(frozen=True)
class OwnerEvent:
    uid: str
    urgent: bool
    """It drifted, appeared or went (not only its status moved)."""


@dataclass(frozen=True)
class Tick:
    pass


Event = HubEvent | ClusterEvent | OwnerEvent | Tick


@dataclass(frozen=True)
class Enqueue:
    key: str
    after: float = 0.0


class Index(Protocol):
    """What the map functions read: the hub cache."""

    def objects(self) -> Iterable[Cached]: ...
    def key_for_uid(self, uid: str) -> str | None: ...


@dataclass(frozen=True)
class World:
    index: Index
    batch_window: float
    resync_period: float
    draw: Callable[[float, float], float] = random.uniform


# ----- the map functions (pure: an event and the cache in, keys out) -------------------------
def hub_object(event: Event, world: World) -> list[Enqueue]:
    """A HyperMLService changed on the hub: itself, unless this is the watch delivering the
    version our own write returned (``HubCache.observe``: acted on when it was made) or a
    deletion (nothing is left to reconcile; the finalizer path ran before)."""
    assert isinstance(event, HubEvent)
    cached = event.new or event.old
    echo = (event.old is not None and event.new is not None
            and event.old.resource_version == event.new.resource_version)
    if cached is None or event.kind == "DELETED" or echo:
        return []
    return [Enqueue(cached.key)]


def concerning(event: Event, world: World) -> list[Enqueue]:
    """A cluster changed: the CRs it may concern."""
    assert isinstance(event, ClusterEvent)
    return [Enqueue(c.key) for c in world.index.objects()
            if c.deleting or c.follows_labels or event.cluster in c.clusters]


def owner(event: Event, world: World) -> list[Enqueue]:
    """An object a CR owns changed on a spoke: that CR; at once when it drifted or went,
    after the batch window when only its status moved (spokes turning Ready together cost
    one reconcile)."""
    assert isinstance(event, OwnerEvent)
    key = world.index.key_for_uid(event.uid)
    return [Enqueue(key, 0 if event.urgent else world.batch_window)] if key else []


def every(event: Event, world: World) -> list[Enqueue]:
    return [Enqueue(c.key) for c in world.index.objects()]


def spread(event: Event, world: World) -> list[Enqueue]:
    """Every CR once within the resync period, each at its own random moment, so that the
    safety net never arrives as one burst."""
    return [Enqueue(c.key, world.draw(0, world.resync_period)) for c in world.index.objects()]


MapFn = Callable[[Event, World], list[Enqueue]]

ROUTES: dict[Source, MapFn] = {
    Source.HUB_OBJECT: hub_object,
    Source.REGISTRATION: concerning,
    Source.PROFILE: concerning,
    Source.REACHABILITY: concerning,
    Source.RECOVERED: concerning,
    Source.SPOKE_OBJECT: owner,
    Source.SHARD: every,
    Source.RESYNC: spread,
}


class Queue(Protocol):
    def add_after(self, key: str, delay: float) -> None: ...


Emit = Callable[[Source, Event], None]
"""How a source reports a change (``Router.emit``)."""


class Router:
    """Routes each source's events through ``ROUTES`` into the work queue."""

    def __init__(self, queue: Queue, world: World) -> None:
        self.queue = queue
        self.world = world

    def emit(self, source: Source, event: Event) -> None:
        for item in ROUTES[source](event, self.world):
            self.queue.add_after(item.key, item.after)
