"""Status conditions: computed (``Condition``: what is true now) and stored (``Stamped``: with
the generation it describes and when its status last changed).

Pure, and the lowest layer of the status: the rollout planner, the traffic planner and the
status aggregate compute ``Condition`` values; ``stamp`` turns them into stored ones, moving
``lastTransitionTime`` only when a condition's status changes (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hmls.domain.wire import number, text


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class Stamped:
    """A condition as stored in ``status.conditions``."""

    type: str
    status: str
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message, "observedGeneration": self.observed_generation,
                "lastTransitionTime": self.last_transition_time}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Stamped:
        return cls(text(raw.get("type")), text(raw.get("status")), text(raw.get("reason")),
                   text(raw.get("message")), number(raw.get("observedGeneration")) or 0,
                   text(raw.get("lastTransitionTime")))


def stamp(previous: Iterable[Stamped], new: Iterable[Condition], *, generation: int,
          now: str) -> tuple[Stamped, ...]:
    """The new conditions as stored, keeping lastTransitionTime where the status did not
    change."""
    old = {c.type: c for c in previous}
    out = []
    for cond in new:
        prev = old.get(cond.type)
        since = prev.last_transition_time if prev and prev.status == cond.status else None
        out.append(Stamped(cond.type, cond.status, cond.reason, cond.message, generation,
                           since or now))
    return tuple(out)
