"""Readiness of spoke objects, one small pure function per kind.

``health`` answers for kinds whose readiness hmls understands (MLService above all) and
returns None for the rest, which count as healthy once applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Health:
    ready: bool
    reason: str


def condition(status: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def mlservice(status: dict[str, Any] | None) -> Health:
    """Ready when the Ready condition is True and the service is not paused."""
    if not status:
        return Health(False, "no status reported yet")
    paused = condition(status, "Paused")
    if paused and paused.get("status") == "True":
        return Health(False, "paused")
    ready = condition(status, "Ready")
    if ready is None:
        return Health(False, "no Ready condition reported yet")
    if ready.get("status") != "True":
        detail = ready.get("message") or ready.get("reason") or "Ready is " + str(ready.get("status"))
        return Health(False, str(detail))
    return Health(True, "Ready")


_BY_KIND: dict[tuple[str, str], Callable[[dict[str, Any] | None], Health]] = {
    ("tensorstack.dev", "MLService"): mlservice,
}


def has_health(api_version: str, kind: str) -> bool:
    return (api_version.split("/")[0], kind) in _BY_KIND


def health(api_version: str, kind: str, status: dict[str, Any] | None) -> Health | None:
    fn = _BY_KIND.get((api_version.split("/")[0], kind))
    return fn(status) if fn else None
