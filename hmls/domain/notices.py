"""``Notice``: a Kubernetes Event that a pure phase asks for (the rollout planner, the
reconcile's phases); the reconciler emits them on the HyperMLService once its status is
written.  Pure, so the planner can say what happened without talking to the hub."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notice:
    type: str
    """Normal or Warning."""
    reason: str
    message: str
