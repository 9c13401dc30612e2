"""Whether a registered cluster is reachable, as its health probe alone decides.

Pure.  A spoke's probe (``/readyz`` on a cadence) feeds each result into ``after_probe``;
the answer to one object's request never does.  A reachable cluster is declared unreachable
only after ``threshold`` consecutive failed probes (Karmada waits 30 s: three 10 s probes),
so a blip does not take a healthy cluster out of traffic; a cluster that has never answered
is unreachable at its first failure, and one success makes a cluster reachable again (the
HeadIngress damps its return).  ``record`` is what the hub keeps for ``hmls cluster list``:
it changes only on a transition or a new error, so an idle fleet writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Reachability:
    reachable: bool | None = None
    """None until the first probe has answered or failed."""
    since: str | None = None
    """When ``reachable`` last changed."""
    last_seen: str | None = None
    """When a probe last succeeded."""
    last_error: str = ""
    """The last failed probe's error; empty after a success."""
    failures: int = 0
    """Consecutive failed probes."""
    version: str = ""

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Reachability:
        """Resume from the verdict the hub keeps (a restarted controller keeps "since" and
        writes nothing while nothing changed)."""
        rec = record or {}
        reachable = rec.get("reachable")
        return cls(reachable if isinstance(reachable, bool) else None,
                   str(rec["since"]) if rec.get("since") else None,
                   str(rec["lastSeen"]) if rec.get("lastSeen") else None,
                   str(rec.get("lastError") or ""), 0, str(rec.get("version") or ""))

    def after_probe(self, *, ok: bool, now: str, error: str = "", version: str = "",
                    threshold: int = 3) -> Reachability:
        if ok:
            return Reachability(True, self.since if self.reachable else now, now, "", 0,
                                version or self.version)
        failures = self.failures + 1
        down = self.reachable is not True or failures >= threshold
        return replace(self, reachable=False if down else self.reachable,
                       since=now if down and self.reachable is not False else self.since,
                       last_error=error, failures=failures)

    def record(self) -> dict[str, Any]:
        """The verdict as the hub stores it (no per-probe fields while reachable)."""
        out: dict[str, Any] = {"reachable": self.reachable, "since": self.since,
                               "version": self.version}
        if self.reachable is not True:
            out.update(lastSeen=self.last_seen, lastError=self.last_error)
        return out
